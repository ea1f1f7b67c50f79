"""``source: npz`` and ``source: npy``: numpy arrays from files.

``.npz`` members are memory-mapped when stored uncompressed (``np.savez``), so a large file is
not read whole just to take a validation split out of it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from kexp.config.schema import NpySource, NpzSource
from kexp.data.arrays import Arrays, Tensors
from kexp.errors import ConfigError, KeyPath, nearest


def _open_npz(path: Path, key_path: KeyPath, mmap: bool) -> Any:
    if not path.is_file():
        raise ConfigError.single(key_path + ("path",), f"file not found: {path}")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError.single(key_path + ("path",), f"not a readable .npz file: {path} ({exc})")


def _select(archive: Any, keys: Any, key_path: KeyPath, path: Path) -> Tensors:
    available = list(archive.files)

    def get(key: str, at: KeyPath) -> np.ndarray:
        if key not in available:
            raise ConfigError.single(
                at,
                f"no array '{key}' in {path.name} (it has: {', '.join(available)})",
                suggestion=nearest(key, available),
            )
        try:
            return archive[key]
        except ValueError as exc:  # object arrays need pickle, which is refused
            raise ConfigError.single(at, f"array '{key}' cannot be read safely: {exc}") from None

    if isinstance(keys, dict):
        return {name: get(key, key_path + (name,)) for name, key in keys.items()}
    return get(keys, key_path)


def load_npz(spec: NpzSource, path: KeyPath, context: Any = None) -> Arrays:
    """Features and labels from the keys ``spec.x`` / ``spec.y`` of one .npz file."""
    file = Path(spec.path)
    archive = _open_npz(file, path, spec.mmap)
    x = _select(archive, spec.x, path + ("x",), file)
    y = None if spec.y is None else _select(archive, spec.y, path + ("y",), file)
    return Arrays(x, y, [str(file)]).check(path)


def _load_npy(file: str, at: KeyPath, mmap: bool) -> np.ndarray:
    p = Path(file)
    if not p.is_file():
        raise ConfigError.single(at, f"file not found: {p}")
    try:
        return np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError.single(at, f"not a readable .npy file: {p} ({exc})") from None


def load_npy(spec: NpySource, path: KeyPath, context: Any = None) -> Arrays:
    """Features and labels each from their own .npy file (or one file per input/output)."""

    def load(files: Any, at: KeyPath) -> Tensors:
        if isinstance(files, dict):
            return {k: _load_npy(f, at + (k,), spec.mmap) for k, f in files.items()}
        return _load_npy(files, at, spec.mmap)

    x = load(spec.x, path + ("x",))
    y = None if spec.y is None else load(spec.y, path + ("y",))
    files = [*(spec.x.values() if isinstance(spec.x, dict) else [spec.x])]
    if spec.y is not None:
        files += list(spec.y.values()) if isinstance(spec.y, dict) else [spec.y]
    return Arrays(x, y, files).check(path)
