"""One process's work on a run directory: from taking it over to the status it leaves.

``kexp train`` (a new run) and ``kexp resume`` (an existing one) both train inside a
:class:`Session`:

* it locks the run directory (:mod:`kexp.training.lock`), so no second process writes it
  (or takes over the lock a resume already holds, :func:`kexp.training.resume.plan_resume`);
* it handles SIGINT/SIGTERM (:mod:`kexp.training.signals`) for its whole duration;
* it is entered as soon as the run directory exists (a new run) or before the resume is
  recorded, and is handed the manifest before it is marked ``running``
  (:meth:`Session.track`): no exception or signal, however early, leaves a run ``running``
  that no process trains;
* :meth:`Session.fit` runs ``fit`` resumably (:mod:`kexp.training.loop`) with the training
  state (:mod:`kexp.training.state`), continuing from the saved state on a resume;
* on the way out it leaves the manifest truthful: ``interrupted`` with where and how to
  resume, ``failed`` with the error (and, for a NaN loss, the epoch, step and last good
  checkpoint), or, once the caller has recorded ``completed``, the state deleted if the
  config asked for it (``BackupAndRestore: {delete_checkpoint: true}``).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Callable, Sequence

from kexp.errors import UserError
from kexp.manifest import Manifest
from kexp.tf import keras
from kexp.training.artifacts import save_model
from kexp.training.history import HistoryFile, as_columns, read_history, repair_csv
from kexp.training.lock import RunLock
from kexp.training.loop import fit_resumable
from kexp.training.nan import NanGuard
from kexp.training.signals import RunInterrupted, StopOnSignal, StopRequest, signal_name
from kexp.training.state import Position, Snapshot, TrainingState


def resume_command(run_dir: Path) -> str:
    return f"kexp resume {shlex.quote(str(run_dir))}"


class Session:
    """Lock, signals, resumable fit and final status for one process on ``run_dir``."""

    def __init__(self, run_dir: Path, manifest: Manifest | None = None,
                 snapshot: Snapshot | None = None, lock: RunLock | None = None):
        self.run_dir = Path(run_dir)
        #: The manifest whose status this session owns; None until :meth:`track`.
        self.manifest = manifest
        self.snapshot = snapshot
        self.state: TrainingState | None = None
        self._callbacks: list[Any] = []  # fit's, once it starts
        self.stop = StopRequest(on_force_exit=self._force_exit)
        self._lock: RunLock | None = lock  # a lock already held (a resume's) is taken over
        self._position: Position | None = None

    # ------------------------------------------------------------------ lifetime

    def __enter__(self) -> "Session":
        if self._lock is None:
            self._lock = RunLock.acquire(self.run_dir)
        try:
            self.stop.__enter__()
        except BaseException:
            self._lock.release()
            raise
        return self

    def track(self, manifest: Manifest) -> None:
        """Leaving the session on an exception or signal records it in ``manifest`` while the
        manifest says ``running``; hand it over before it is saved as ``running``. A run
        whose manifest says anything else (a completed run a resume has not yet marked)
        is left as it was."""
        self.manifest = manifest

    def _owns_status(self) -> bool:
        return self.manifest is not None and self.manifest.data.get("status") == "running"

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if exc is not None and not self._owns_status():
                pass  # nothing of this session's recorded: the manifest stays as it was
            elif exc is None:
                if self.state is not None and self.state.delete_checkpoint:
                    self.state.discard()
            elif isinstance(exc, (KeyboardInterrupt, RunInterrupted)):
                position = getattr(exc, "position", None) or self._saved_position()
                self.manifest.finish(
                    "interrupted", exc,
                    interrupted_at=_position_record(position),
                    resume_command=resume_command(self.run_dir),
                    **self._progress(),
                )
            else:
                self.manifest.finish("failed", exc,
                                     **{**self._progress(), **getattr(exc, "details", {})})
        finally:
            self.stop.__exit__()
            if self._lock is not None:
                self._lock.release()

    def _progress(self) -> dict[str, Any]:
        """The epochs a stopped run finished and the metrics of its last one, from its
        history: an interrupted run's manifest says how far it got, not ``0`` and ``{}``."""
        history = _whole_history(self._callbacks, None)
        finished = len(next(iter(history.values()), []))
        if not finished:
            return {}
        return {"epochs_completed": finished,
                "final_metrics": {k: v[-1] for k, v in history.items()}}

    def _saved_position(self) -> Position | None:
        if self.state is not None and self.state.position is not None:
            return self.state.position
        return self.snapshot.position if self.snapshot else None

    def _force_exit(self, signum: int) -> None:
        if not self._owns_status():
            return
        position = self._saved_position()
        self.manifest.finish(
            "interrupted",
            RunInterrupted(f"stopped at once by a second {signal_name(signum)}", signum),
            interrupted_at=_position_record(position),
            resume_command=resume_command(self.run_dir),
            **self._progress(),
        )

    # ----------------------------------------------------------------------- fit

    def fit(
        self,
        model: Any,
        train_data: Callable[[int], Any],
        *,
        epochs: int,
        steps_per_epoch: int,
        batches_per_pass: int,
        callbacks: Sequence[Any],
        last_checkpoint: Path | None = None,
        stage_starts: Sequence[int] = (),
        enter_stage: Callable[..., Any] | None = None,
        **fit_kwargs: Any,
    ) -> dict[str, list[float]]:
        """Train to ``epochs`` (from the saved state on a resume); returns the whole run's
        history (every epoch of every session), as ``{metric: [value per epoch]}``.

        ``train_data(p)`` builds the endless stream of training batches from pass ``p`` on
        (:func:`kexp.training.loop.fit_resumable`). ``callbacks`` come from
        :func:`kexp.training.callbacks.build_callbacks`, which puts a
        :class:`TrainingState` among them. ``last_checkpoint`` is saved when a signal stops
        the run mid-epoch (``checkpoint.save_last``).
        """
        callbacks = list(callbacks)
        state = next((c for c in callbacks if isinstance(c, TrainingState)), None)
        if state is None:
            state = TrainingState(self.run_dir / "backup")
            callbacks.append(state)
        self.state = state
        self._callbacks = callbacks  # their history, for the manifest of a stopped run
        for callback in callbacks:
            if isinstance(callback, NanGuard):
                callback.steps_per_epoch = steps_per_epoch
        snapshot = self.snapshot
        if snapshot is not None and snapshot.steps_per_epoch not in (None, steps_per_epoch):
            raise UserError(
                f"the saved training state is at {snapshot.position.describe()} of "
                f"{snapshot.steps_per_epoch} steps per epoch, but this config makes "
                f"{steps_per_epoch}: the data or batch size changed, so it cannot be resumed"
            )
        start = snapshot.position if snapshot else Position()
        if snapshot is not None:
            self._prepare_resume(callbacks, start)
        state.restore(snapshot)

        def on_stop(position: Position) -> str:
            saved = f"training state saved in {state.directory}"
            if last_checkpoint is not None and position.step:
                save_model(model, last_checkpoint)
            if last_checkpoint is not None and last_checkpoint.is_file():
                saved += f", last checkpoint {last_checkpoint}"
            return f"{saved}. Resume with: {resume_command(self.run_dir)}"

        interrupt = StopOnSignal(self.stop, state, on_stop)
        try:
            history = fit_resumable(
                model, train_data, epochs=epochs, steps_per_epoch=steps_per_epoch,
                batches_per_pass=batches_per_pass,
                callbacks=callbacks, state=state, after_state=[interrupt], start=start,
                stage_starts=stage_starts, enter_stage=enter_stage,
                build_metrics=lambda: _build_metrics(model, train_data), **fit_kwargs,
            )
        finally:
            self.stop.accepting = False  # from here on a signal stops the run at once
        if self.stop.requested:  # after the last step's end, before fit returned: no step
            # was left to stop at, so it stops here, as a signal during the final saves does
            signum = int(self.stop.signum)
            raise RunInterrupted(f"{signal_name(signum)} as training ended: stopped before "
                                 "the final saves", signum, state.position)
        return _whole_history(callbacks, history)

    def _prepare_resume(self, callbacks: list[Any], start: Position) -> None:
        """Cut history files back to the epochs the saved state has finished. (What a killed
        process left, temporaries and the data cache, is removed by every resume, with or
        without a saved state: :meth:`kexp.training.resume.ResumePlan.start`.)"""
        for callback in callbacks:
            if isinstance(callback, HistoryFile):
                callback.rows = [r for r in read_history(callback.path) if r["epoch"] < start.epochs]
            elif isinstance(callback, keras.callbacks.CSVLogger):
                repair_csv(Path(callback.filename), start.epochs, callback.sep)


def _position_record(position: Position | None) -> dict[str, int] | None:
    if position is None:
        return None
    return {"epochs_completed": position.epochs, "step": position.step}


def _build_metrics(model: Any, train_data: Callable[[int], Any]) -> None:
    """Create the compiled metrics' variables (Keras makes them at the first step)."""
    batch = next(iter(train_data(0).take(1)))
    x, y = batch[0], batch[1]
    with model.distribute_strategy.scope():
        model.compute_metrics(x, y, model(x, training=False), sample_weight=None)


def _whole_history(callbacks: Sequence[Any], history: Any) -> dict[str, list[float]]:
    for callback in callbacks:
        if isinstance(callback, HistoryFile) and callback.rows is not None:
            return as_columns(callback.rows)
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.CSVLogger):
            return as_columns(read_history(Path(callback.filename), callback.sep))
    if history is None:
        return {}
    return {k: [float(v) for v in vs] for k, vs in history.history.items()}
