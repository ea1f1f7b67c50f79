"""Run directories: ``<root>/<name>/<UTC time>-<id>/``, always new, never reused.

The directory is created with ``exist_ok=False`` and a random id, so two processes started at
the same moment on the same config get two directories, and an earlier run is never touched.
"""

from __future__ import annotations

import datetime as _dt
import secrets
from pathlib import Path

from kexp.errors import UserError


def new_run_dir(root: Path, name: str) -> Path:
    """Create and return a fresh run directory under ``root/name``."""
    parent = Path(root) / name
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output directory {parent}: {exc}") from None
    for _ in range(100):
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        candidate = parent / f"{stamp}-{secrets.token_hex(3)}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"cannot create the run directory {candidate}: {exc}") from None
        return candidate
    raise UserError(f"could not find a free run directory name under {parent}")
