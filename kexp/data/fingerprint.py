"""Content fingerprints of the data a run read: a file's sha256, or a directory's.

A directory (an image or text folder, a TFDS dataset, a Keras cache folder) is fingerprinted
by a stable listing: every regular file under it, sorted by its path relative to the
directory, each contributing its relative path and its own sha256. Renaming, adding, removing
or editing any file changes the fingerprint; file times and listing order do not.

    >>> fingerprint("configs/data/iris_train.csv")       # doctest: +SKIP
    'd1f7add06e1c32231d9f032e9282a925aab1184a3d2c9eac5fd705619c0cdca5'
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def listing(directory: str | Path) -> list[str]:
    """Relative paths (POSIX form) of every file under ``directory``, sorted."""
    root = Path(directory)
    found = []
    for folder, _, names in os.walk(root, followlinks=True):
        for name in names:
            path = Path(folder) / name
            if path.is_file():
                found.append(path.relative_to(root).as_posix())
    return sorted(found)


def directory_sha256(directory: str | Path) -> str:
    """sha256 over the stable listing of ``directory`` and each file's sha256."""
    digest = hashlib.sha256()
    for relative in listing(directory):
        digest.update(relative.encode("utf-8") + b"\0")
        digest.update(file_sha256(Path(directory) / relative).encode("ascii") + b"\n")
    return digest.hexdigest()


def fingerprint(path: str | Path) -> str:
    """The content fingerprint of a file or a directory (raises OSError when it is gone)."""
    if Path(path).is_dir():
        return directory_sha256(path)
    return file_sha256(path)
