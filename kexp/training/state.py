"""The training state of a run (``<run>/backup/``): everything a resume needs to continue
exactly where the run stopped, saved so that a kill at any moment leaves a usable state.

:class:`TrainingState` is a ``keras.callbacks.BackupAndRestore`` (same arguments: ``backup_dir``,
``save_freq`` of ``"epoch"`` or every N steps, ``double_checkpoint``, ``delete_checkpoint``)
that saves more, and saves it atomically. Keras' own callback writes the weights file in
place and its epoch counter in a second file, so a kill while saving can leave a torn
weights file or weights and counter from different epochs; it does not save the random
generator states of layers such as ``Dropout``, the metric accumulators of a half-finished
epoch or other callbacks' progress, so a resumed run does not continue the same computation;
and after a mid-epoch backup it replays the epoch from its first step. kexp's state is:

* ``state-<n>.npz`` — the values of ``model.variables`` (weights and the layers' random
  generator states) and ``optimizer.variables`` (slots, iteration count, learning rate), in
  Keras' order; Keras' global ``SeedGenerator``, numpy's and Python's generator states; for a
  mid-epoch state the metric accumulators; callbacks' arrays (best weights);
* ``state.json`` — the commit record: position (epochs finished, steps into the next one),
  which ``state-<n>.npz`` belongs to it, and callbacks' progress.

The values are written with numpy rather than ``model.save_weights``: the state is only ever
read back into the model it came from (the shapes are checked), and Keras' weights file costs
several times as much to write, at every epoch. Each file is written to a temporary name and
renamed; ``state.json`` is written last and is the commit point: until it is renamed, the
previous ``state.json`` and the file it names are untouched. Older generations are deleted
only after the commit.
"""

from __future__ import annotations

import datetime as _dt
import json
import random
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from kexp.errors import UserError
from kexp.tf import keras
from kexp.training import callback_state
from kexp.training.artifacts import atomic_path, remove_stale_temporaries, write_json

STATE_FILE = "state.json"
FORMAT = 1


@dataclass(frozen=True)
class Position:
    """Where training stands: ``epochs`` finished, and ``step`` steps into the next epoch."""

    epochs: int = 0
    step: int = 0

    def describe(self, steps_per_epoch: int | None = None) -> str:
        """1-based, as people (and Keras' progress bar) count epochs."""
        if self.step:
            of = f"/{steps_per_epoch}" if steps_per_epoch else ""
            return f"epoch {self.epochs + 1}, step {self.step}{of}"
        return f"the end of epoch {self.epochs}" if self.epochs else "the start"


@dataclass
class Snapshot:
    """A saved training state, read back from ``backup/``."""

    directory: Path
    record: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def position(self) -> Position:
        return Position(int(self.record["epochs"]), int(self.record["step"]))

    @property
    def steps_per_epoch(self) -> int | None:
        return self.record.get("steps_per_epoch")

    def callbacks(self) -> dict[str, dict[str, Any]]:
        return callback_state.join_arrays(self.record.get("callbacks", {}), self.arrays)

    def group(self, prefix: str) -> list[np.ndarray]:
        count = int(self.record.get("counts", {}).get(prefix, 0))
        return [self.arrays[f"{prefix}/{i}"] for i in range(count)]


#: What reading a damaged file of the training state raises: a truncated or garbled npz is a
#: ``BadZipFile`` or ``EOFError`` as often as a ``ValueError``.
DAMAGED = (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError,
           zipfile.BadZipFile)


def read_record(path: Path) -> dict[str, Any]:
    """The state record ``path`` (``state.json``), or a ``UserError`` saying it is damaged.

    Written atomically by this module, so damage comes from outside (a disk error, a hand
    edit, a copy cut short): said plainly instead of a ``JSONDecodeError`` traceback.
    """
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        Position(int(record["epochs"]), int(record["step"]))
        return record
    except DAMAGED as exc:
        raise UserError(
            f"the training state {path} is damaged and cannot be read ({type(exc).__name__}: "
            f"{exc}); the run cannot continue from it. Its checkpoints and saved models are "
            "untouched: start a new run, or continue from checkpoints/last.keras by hand"
        ) from exc


def read_position(backup_dir: Path) -> Position | None:
    """The committed position in ``backup_dir``, or None when nothing was saved yet."""
    path = Path(backup_dir) / STATE_FILE
    if not path.is_file():
        return None
    record = read_record(path)
    return Position(int(record["epochs"]), int(record["step"]))


def load_snapshot(backup_dir: Path) -> Snapshot | None:
    """The committed state in ``backup_dir`` (falling back to the previous one kept by
    ``double_checkpoint`` if the current files cannot be read); None when there is none."""
    backup_dir = Path(backup_dir)
    path = backup_dir / STATE_FILE
    if not path.is_file():
        return None
    record = read_record(path)
    if record.get("format") != FORMAT:
        raise UserError(
            f"{path} was written by another kexp version (state format "
            f"{record.get('format')}, this kexp reads {FORMAT}); it cannot be resumed here"
        )
    candidates = [record] + ([record["previous"]] if record.get("previous") else [])
    problems = []
    for candidate in candidates:
        try:
            with np.load(backup_dir / candidate["arrays"], allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            return Snapshot(backup_dir, candidate, arrays)
        except DAMAGED as exc:
            problems.append(f"{candidate.get('arrays')}: {exc or type(exc).__name__}")
    raise UserError(f"the training state in {backup_dir} cannot be read: {'; '.join(problems)}")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _assign(variables: list[Any], values: list[np.ndarray], what: str) -> None:
    """Put saved values back, after checking they are this model's (count and shapes)."""
    shapes = [tuple(v.shape) for v in variables]
    saved = [tuple(np.shape(value)) for value in values]
    if shapes != saved:
        raise UserError(
            f"the saved training state does not fit this {what}: it has {len(saved)} "
            f"variable(s), the {what} {len(shapes)}"
            + ("" if len(saved) != len(shapes) else " with other shapes")
            + "; the run's config or code (plugins) changed since the state was saved"
        )
    for variable, value in zip(variables, values):
        variable.assign(value)


def _global_seed_generator() -> Any:
    """Keras' global SeedGenerator (used by ``keras.random`` calls without a seed), if made."""
    try:
        from keras.src.backend.common import global_state

        return global_state.get_global_attribute("global_seed_generator")
    except Exception:  # private API: without it only this generator is not restored
        return None


class TrainingState(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that saves the complete training state atomically (module doc).

    The fit driver (:mod:`kexp.training.loop`) sets :attr:`steps_per_epoch` and
    :attr:`callbacks` (the list whose progress is saved), calls :meth:`restore` with the
    snapshot to continue from, and, for a stop on a signal, :meth:`save` at any step.
    Restoring happens in ``on_train_begin``, after anything that recompiles the model (a
    second training stage), as Keras' own callback does it.
    """

    def __init__(
        self,
        backup_dir: str | Path,
        save_freq: str | int = "epoch",
        double_checkpoint: bool = False,
        delete_checkpoint: bool = False,
    ):
        super().__init__(str(backup_dir), save_freq, double_checkpoint, delete_checkpoint)
        self.directory = Path(backup_dir)
        self.steps_per_epoch: int | None = None
        self.callbacks: list[Any] = []
        #: Creates the compiled metrics' variables (set by the fit driver; see on_epoch_begin).
        self.build_metrics: Callable[[], None] | None = None
        #: Epochs where a training stage begins with a fresh optimizer (set by the fit driver).
        self.stage_starts: set[int] = set()
        self.epoch = 0
        self.position: Position | None = None
        self._snapshot: Snapshot | None = None
        self._pending_metrics: tuple[int, list[np.ndarray]] | None = None
        self._since_save = 0
        self._last_done = 0
        self._generation = 0
        if (self.directory / STATE_FILE).is_file():
            record = read_record(self.directory / STATE_FILE)
            self._generation = int(record.get("generation", 0))

    @classmethod
    def like(cls, keras_callback: Any, **overrides: Any) -> "TrainingState":
        """kexp's state for a ``BackupAndRestore`` a config declared, with its arguments."""
        kwargs = {
            "backup_dir": keras_callback.backup_dir,
            "save_freq": keras_callback.save_freq,
            "double_checkpoint": keras_callback.double_checkpoint,
            "delete_checkpoint": keras_callback.delete_checkpoint,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    # ------------------------------------------------------------------ restore

    def restore(self, snapshot: Snapshot | None) -> None:
        """Continue from ``snapshot`` at the next ``on_train_begin`` (None: from scratch)."""
        self._snapshot = snapshot
        self.position = snapshot.position if snapshot else Position()
        self.epoch = self.position.epochs

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is None:
            return
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(model.trainable_variables)  # its variables must exist to be loaded
        _assign(model.variables, snapshot.group("model"), "model")
        position = snapshot.position
        stage_start = position.step == 0 and position.epochs in self.stage_starts
        if optimizer is not None and not stage_start:
            # (a new training stage starts with the new optimizer its recompile made, as in
            # the uninterrupted run; the saved one belonged to the stage before)
            _assign(optimizer.variables, snapshot.group("optimizer"), "optimizer")
        global_generator = _global_seed_generator()
        saved_global = snapshot.group("global_seed")
        if global_generator is not None and saved_global:
            global_generator.state.assign(saved_global[0])
        _set_host_rng(snapshot)
        callback_state.set_states(self.callbacks, snapshot.callbacks())
        if snapshot.position.step:
            self._pending_metrics = (snapshot.position.epochs, snapshot.group("metric"))
        self._since_save = 0

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.epoch = epoch
        self._last_done = self.position.step if self.position and self.position.epochs == epoch else 0
        if self._pending_metrics is not None and self._pending_metrics[0] == epoch:
            # Keras has just reset the metrics for this epoch; the part of it done before the
            # stop is in the saved accumulators, so the epoch's metrics come out the same.
            # Keras makes compiled metrics' variables at the first step (again after a stage's
            # recompile); they must exist to take the saved values
            if self.build_metrics is not None:
                self.build_metrics()
            _assign(self.model.metrics_variables, self._pending_metrics[1], "model's metrics")
        self._pending_metrics = None

    # --------------------------------------------------------------------- save

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self.save_freq == "epoch" or self.save_freq is False:
            return  # (kexp saves at every epoch end in any case)
        done = batch + 1  # steps finished in this epoch (batch is the last step's index)
        self._since_save += done - self._last_done
        self._last_done = done
        if self._since_save >= int(self.save_freq) and (
            self.steps_per_epoch is None or done < self.steps_per_epoch
        ):  # at the last step the epoch-end save follows, after validation
            self.save(Position(self.epoch, done), reason="step")

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.save(Position(epoch + 1, 0), reason="epoch")

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        # Callbacks' on_train_end may change the weights (EarlyStopping restoring its best);
        # the state after them is the one a resume at this position must start from.
        if self.position is not None:
            self.save(self.position, reason="train_end")

    def save(self, position: Position, reason: str) -> None:
        """Save the state at ``position`` (atomic; the commit is ``state.json``)."""
        model = self.model
        generation = self._generation + 1
        arrays_name = f"state-{generation:06d}.npz"
        arrays: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}

        def add(prefix: str, values: list[Any]) -> None:
            counts[prefix] = len(values)
            for i, value in enumerate(values):
                arrays[f"{prefix}/{i}"] = np.asarray(value)

        add("model", [v.numpy() for v in model.variables])
        optimizer = getattr(model, "optimizer", None)
        add("optimizer", [v.numpy() for v in optimizer.variables] if optimizer is not None else [])
        global_generator = _global_seed_generator()
        add("global_seed", [global_generator.state.numpy()] if global_generator else [])
        add("metric", [np.asarray(v.numpy()) for v in model.metrics_variables] if position.step else [])
        host = _host_rng(arrays)
        scalars, callback_arrays = callback_state.split_arrays(
            callback_state.get_states(self.callbacks)
        )
        arrays.update(callback_arrays)
        with atomic_path(self.directory / arrays_name) as tmp:
            with tmp.open("wb") as handle:
                np.savez(handle, **arrays)
        previous = None
        state_path = self.directory / STATE_FILE
        if self.double_checkpoint and state_path.is_file():
            old = json.loads(state_path.read_text(encoding="utf-8"))
            old.pop("previous", None)
            previous = old
        record = {
            "format": FORMAT,
            "generation": generation,
            "epochs": position.epochs,
            "step": position.step,
            "steps_per_epoch": self.steps_per_epoch,
            "reason": reason,
            "saved_at": _now(),
            "arrays": arrays_name,
            "counts": counts,
            "host_rng": host,
            "callbacks": scalars,
            "previous": previous,
        }
        write_json(state_path, record)  # the commit point
        self._generation = generation
        self.position = position
        self._since_save = 0
        keep = {arrays_name}
        if previous:
            keep.add(previous["arrays"])
        for path in self.directory.glob("state-*"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Delete the saved state (``delete_checkpoint``), once the run has completed."""
        for path in self.directory.glob("state*"):
            path.unlink(missing_ok=True)
        remove_stale_temporaries(self.directory)
        try:
            self.directory.rmdir()
        except OSError:
            pass


def _host_rng(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Python's and numpy's global generator states (seeded by ``set_random_seed`` too)."""
    version, internal, gauss = random.getstate()
    arrays["python_rng"] = np.asarray(internal, dtype=np.int64)
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    arrays["numpy_rng"] = np.asarray(keys)
    return {"python": [version, gauss], "numpy": [kind, int(pos), int(has_gauss), float(cached)]}


def _set_host_rng(snapshot: Snapshot) -> None:
    host = snapshot.record.get("host_rng")
    if not host:
        return
    version, gauss = host["python"]
    random.setstate((version, tuple(int(v) for v in snapshot.arrays["python_rng"]), gauss))
    kind, pos, has_gauss, cached = host["numpy"]
    np.random.set_state((kind, snapshot.arrays["numpy_rng"], pos, has_gauss, cached))


def with_training_state(callbacks: list[Any], declared: dict[str, Any] | None,
                        run_dir: Path) -> list[Any]:
    """``callbacks`` with kexp's :class:`TrainingState` in place of a declared
    ``BackupAndRestore`` (keeping its arguments), or added with the defaults.

    ``declared`` is the keyword arguments the config gave ``BackupAndRestore`` (None when it
    declares none). kexp keeps the state after a completed run unless ``delete_checkpoint``
    is given: it is what lets a completed run be resumed with more epochs.
    """
    out: list[Any] = []
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.BackupAndRestore) and not isinstance(
            callback, TrainingState
        ):
            delete = bool((declared or {}).get("delete_checkpoint", False))
            callback = TrainingState.like(callback, delete_checkpoint=delete)
        out.append(callback)
    if not any(isinstance(c, TrainingState) for c in out):
        out.append(TrainingState(Path(run_dir) / "backup"))
    return out
