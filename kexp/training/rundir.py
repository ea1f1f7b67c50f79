"""Run directories: ``<root>/<name>/<UTC time>-<id>/``, always new, never reused.

The directory is created with ``exist_ok=False`` and a random id, so two processes started at
the same moment on the same config get two directories, and an earlier run is never touched.
"""

from __future__ import annotations

import datetime as _dt
import secrets
from pathlib import Path

from kexp.errors import UserError
from kexp.training.lock import LOCK_FILE

#: What kexp itself writes in a run directory, by path relative to it.
KEXP_FILES = {
    "config.yaml": "resolved config", "overrides.yaml": "--set overrides",
    "manifest.json": "manifest", "model.keras": "final model", "model.h5": "final model",
    "splits.npz": "split indices", "evaluation.json": "test metrics", LOCK_FILE: "lock",
    "checkpoints/best.keras": "best checkpoint", "checkpoints/last.keras": "last checkpoint",
}
#: Folders of a run directory that only kexp writes into.
KEXP_FOLDERS = ("checkpoints", "cache", "evaluations")
#: Written by kexp unless the config declares its own CSVLogger / TensorBoard / BackupAndRestore.
DEFAULT_CALLBACK_FILES = {"history.csv": "history"}
DEFAULT_CALLBACK_FOLDERS = ("logs", "backup")


def run_file_role(path: Path) -> str | None:
    """What ``path`` is to the kexp run directory it lies in ("the run's final model"), or
    None when it is no file of a run (outside any, or a file of the user's own in one).

    A run directory is known by its ``manifest.json`` and ``config.yaml``. ``predict`` and
    ``evaluate`` refuse to write their output over these even with ``--overwrite``: a
    prediction file must never replace the model it came from.
    """
    path = Path(path).absolute()
    for run_dir in path.parents:
        if (run_dir / "manifest.json").is_file() and (run_dir / "config.yaml").is_file():
            inside = path.relative_to(run_dir).as_posix()
            files = {**KEXP_FILES, **DEFAULT_CALLBACK_FILES}
            if inside in files:
                return f"the {files[inside]} of the run {run_dir}"
            folder = inside.split("/", 1)[0]
            if "/" in inside and folder in KEXP_FOLDERS + DEFAULT_CALLBACK_FOLDERS:
                return f"a file in {folder}/ of the run {run_dir}, which kexp writes"
            return None
    return None


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
