"""Ctrl-C and SIGTERM: stop cleanly on the first, at once on the second.

The first SIGINT or SIGTERM does not kill the run. While ``fit`` runs, it only asks
:class:`StopOnSignal` to stop at the end of the current step: the training state is saved at
that exact step, then the last checkpoint, and the run ends with status ``interrupted`` and
the command that resumes it (exit code 128 + the signal number: 130 for Ctrl-C, 143 for
SIGTERM). Outside ``fit`` (loading, final saving) there is no step to finish: the run stops
at once, the same way. A second signal exits immediately, after one atomic rewrite of the
manifest; every file under a final name is still whole (they are all written atomically), and
the run resumes from the last saved state. Once the manifest says ``completed``, a signal
changes nothing: the process ends normally, exit 0, as a finished run should for a scheduler.

Python runs signal handlers between bytecodes of the main thread, so a step that is one long
TensorFlow call is finished before even the second signal is seen; handlers can only be
installed from the main thread (elsewhere, e.g. in a notebook's worker thread, kexp leaves
signals alone).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable, Mapping

from kexp.errors import KexpError
from kexp.tf import keras
from kexp.training.state import Position, TrainingState

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class RunInterrupted(KexpError):
    """The run stopped on a signal; its state is saved and it can be resumed."""

    title = "interrupted"

    def __init__(self, message: str, signum: int, position: Position | None = None):
        super().__init__(message)
        self.signum = signum
        self.position = position
        self.exit_code = 128 + signum


class StopRequest:
    """Signal handlers for the duration of a run (a context manager).

    ``accepting`` is True while a training loop will honour the request at its next step.
    ``on_force_exit(signum)`` runs just before a second signal's immediate exit.
    """

    def __init__(self, on_force_exit: Callable[[int], None] | None = None):
        self.signum: int | None = None
        self.accepting = False
        #: True once the run's manifest says ``completed``: a signal then changes nothing
        #: (exiting 143 would make a scheduler retry a finished run)
        self.completed = False
        self.on_force_exit = on_force_exit
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal_name(signum)
        if self.completed:  # nothing left to stop: exit 0 as a completed run does
            sys.stderr.write(f"\nkexp: {name}: the run has already completed; exiting "
                             "normally\n")
            sys.stderr.flush()
            return
        if self.signum is not None:
            sys.stderr.write(f"\nkexp: second {name}: stopping now\n")
            sys.stderr.flush()
            if self.on_force_exit is not None:
                try:
                    self.on_force_exit(signum)
                except Exception:  # exiting regardless: the state saved last still resumes
                    pass
            os._exit(128 + signum)
        self.signum = signum
        if not self.accepting:
            raise RunInterrupted(f"{name}, outside the training loop: stopped at once", signum)
        sys.stderr.write(
            f"\nkexp: {name} received: finishing the current step, then saving the training "
            "state (send it again to stop at once)\n"
        )
        sys.stderr.flush()


class StopOnSignal(keras.callbacks.Callback):
    """Acts on a :class:`StopRequest` at the next step end (or epoch end) of ``fit``.

    Must come after the :class:`TrainingState` in the callback list, so that at an epoch end
    the state of that epoch is already saved when it stops.
    """

    def __init__(
        self,
        request: StopRequest,
        state: TrainingState,
        on_stop: Callable[[Position], str],
    ):
        super().__init__()
        self.request = request
        self.state = state
        self.on_stop = on_stop
        self.epoch = 0

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self.request.accepting = True

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if not self.request.requested:
            return
        done = batch + 1
        steps = self.state.steps_per_epoch
        if steps is not None and done >= steps:
            return  # the epoch's last step: stop after its validation and epoch-end saves
        position = Position(self.epoch, done)
        self.state.save(position, reason="signal")
        self._stop(position)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self.request.requested:
            self._stop(Position(epoch + 1, 0))  # the state callback has saved this epoch

    def _stop(self, position: Position) -> None:
        self.request.accepting = False
        saved = self.on_stop(position)
        signum = self.request.signum or signal.SIGINT
        raise RunInterrupted(
            f"{signal_name(signum)} at {position.describe(self.state.steps_per_epoch)}: {saved}",
            signum,
            position,
        )
