"""One process at a time per run directory.

A run directory is written by the process training it; ``kexp resume`` on a run that is still
being trained (a second terminal, a job scheduler retrying too early) would have two processes
writing the same checkpoints and state. The training process holds an exclusive ``flock`` on
``<run>/.kexp.lock`` for as long as it runs; the kernel drops it when the process ends however
it ends (even SIGKILL), so a crashed run never stays locked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

from kexp.errors import UserError

LOCK_FILE = ".kexp.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; runs are not guarded
    fcntl = None  # type: ignore[assignment]


class RunLock:
    """An exclusive lock on a run directory (a context manager; :meth:`release` is idempotent)."""

    def __init__(self, run_dir: Path, handle: IO[Any] | None):
        self.run_dir = Path(run_dir)
        self._handle = handle

    @classmethod
    def acquire(cls, run_dir: Path) -> "RunLock":
        """Lock ``run_dir`` or raise UserError naming the process that holds it."""
        path = Path(run_dir) / LOCK_FILE
        handle = open(path, "a+", encoding="utf-8")
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise UserError(
                    f"{run_dir} is being trained right now (by process {holder}); wait for it "
                    "to end, or stop it (Ctrl-C saves its state) before resuming"
                ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return cls(run_dir, handle)

    @staticmethod
    def is_held(run_dir: Path) -> bool:
        """Whether some process holds the lock of ``run_dir`` now."""
        path = Path(run_dir) / LOCK_FILE
        if fcntl is None or not path.is_file():
            return False
        with open(path, "a+", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False

    def release(self) -> None:
        if self._handle is not None:
            if fcntl is not None:
                fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
