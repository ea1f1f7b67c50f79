"""Why a data path cannot be read, in words: missing, a folder where a file is expected (or
the reverse), a symbolic link that loops or points nowhere.

``Path.is_file()`` answers all of these with a bare ``False`` (and ``Path.resolve()`` raises
``RuntimeError: Symlink loop`` on a loop), so every source asks here instead, to tell the
user which of them it is. No TensorFlow: the preflight check uses it before TF is imported.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from kexp.errors import ConfigError, KeyPath


def link_problem(path: Path) -> str | None:
    """A symbolic link on the way to ``path`` that loops or points nowhere (or None)."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path} is a symbolic link loop (following its links never reaches a file)"
        if os.path.islink(path):
            return f"{path} is a broken symbolic link (to {os.readlink(path)}, which does not exist)"
    return None


def path_problem(path: str | Path, expect: str = "file") -> str | None:
    """Why ``path`` is not a readable ``expect`` ("file", "folder", or "any"), else None."""
    path = Path(path)
    link = link_problem(path)
    if link is not None:
        return link
    if path.is_dir():
        if expect == "file":
            return f"{path} is a folder, not a file"
        return None
    if path.exists():
        if expect == "folder":
            return f"{path} is a file, not a folder"
        if not path.is_file():
            return f"{path} is not a regular file (a device, socket or pipe)"
        return None
    what = {"file": "file", "folder": "folder"}.get(expect, "file or folder")
    return f"{what} not found: {path}"


def require(path: str | Path, at: KeyPath, expect: str = "file") -> Path:
    """``path`` when it is a readable ``expect``; else a ConfigError at ``at`` saying why."""
    problem = path_problem(path, expect)
    if problem is not None:
        raise ConfigError.single(at, problem)
    return Path(path)

