"""Run the real kexp CLI with one test hook in it: ``python tests/_kexp_hooks.py HOOK -- ARGS``.

Tests of what happens when a process dies need it to die at an exact point, which no outside
timer can hit. The hook changes nothing else: the command line, the config and every code
path are those of ``python -m kexp ARGS``.

Hooks:

``kill_at:EPOCH:STEP``
    SIGKILL the process itself at the end of step STEP of epoch EPOCH (both 1-based), as a
    callback added after kexp's own.
``slow_steps:SECONDS``
    At the end of every training step, print ``kexp-test-step EPOCH STEP`` to stderr, then
    sleep SECONDS (a test sends its signal "during a step" this way).
``kill_in:WHAT:N[:NAME]``
    SIGKILL the process inside the N-th write of WHAT (whose file name contains NAME), after
    its bytes are written but before the file is complete: ``zip`` (a ``.keras`` archive or an
    ``.npz``, at ``ZipFile.close``), ``h5`` (an HDF5 file opened for writing, at
    ``h5py.File.close``).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

MARK = "kexp-test-step"


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _add_callback(make: Any) -> None:
    """Append ``make()`` to every callback list kexp builds."""
    import kexp.training.callbacks as callbacks_module
    import kexp.training.run as run_module

    original = callbacks_module.build_callbacks

    def build(config: Any, run_dir: Any) -> Any:
        callbacks, checkpoints = original(config, run_dir)
        return [*callbacks, make()], checkpoints

    callbacks_module.build_callbacks = build
    run_module.build_callbacks = build


def _kill_at(epoch: int, step: int) -> None:
    from kexp.tf import keras

    class KillAt(keras.callbacks.Callback):
        def on_epoch_begin(self, e: int, logs: Any = None) -> None:
            self.epoch = e + 1

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if self.epoch == epoch and batch + 1 == step:
                _die()

    _add_callback(KillAt)


def _slow_steps(seconds: float) -> None:
    from kexp.tf import keras

    class Slow(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch = epoch + 1

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            sys.stderr.write(f"{MARK} {self.epoch} {batch + 1}\n")  # the tests wait for it
            sys.stderr.flush()
            time.sleep(seconds)

    _add_callback(Slow)


def _kill_in(what: str, n: int, name_part: str = "") -> None:
    count = {"calls": 0}

    def maybe_die(name: Any) -> None:
        if name_part not in str(name):
            return
        count["calls"] += 1
        if count["calls"] == n:
            _die()

    if what == "zip":
        import zipfile

        close = zipfile.ZipFile.close

        def zip_close(self: Any) -> None:
            if self.mode == "w" and self.fp is not None:
                self.fp.flush()
                maybe_die(getattr(self.fp, "name", ""))
            close(self)

        zipfile.ZipFile.close = zip_close  # type: ignore[method-assign]
    elif what == "h5":
        import h5py

        close = h5py.File.close

        def h5_close(self: Any) -> None:
            if self.id.valid and self.mode == "r+":
                self.flush()
                maybe_die(self.filename)
            close(self)

        h5py.File.close = h5_close  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown kill_in target {what!r}")


def main() -> None:
    hook, separator, *args = sys.argv[1:]
    assert separator == "--", "usage: _kexp_hooks.py HOOK -- KEXP ARGS"
    name, *params = hook.split(":")
    if name == "kill_at":
        _kill_at(int(params[0]), int(params[1]))
    elif name == "slow_steps":
        _slow_steps(float(params[0]))
    elif name == "kill_in":
        _kill_in(params[0], int(params[1]), *params[2:])
    else:
        raise SystemExit(f"unknown hook {hook!r}")
    from kexp.cli import main as cli_main

    sys.argv = ["kexp", *args]
    cli_main()


if __name__ == "__main__":
    main()
