"""``source: npz`` and ``source: npy``: numpy arrays from files.

``.npz`` members are memory-mapped when stored uncompressed (``np.savez``, not
``np.savez_compressed``), so a large file is not read whole just to take a validation split
out of it. numpy itself memory-maps only ``.npy`` files; for an ``.npz`` member kexp finds
where the member's ``.npy`` data starts inside the zip and maps that.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from kexp.config.schema import NpySource, NpzSource
from kexp.data.arrays import Arrays, Tensors
from kexp.data.files import require
from kexp.errors import ConfigError, KeyPath, nearest


def _open_npz(path: Path, key_path: KeyPath, mmap: bool) -> Any:
    require(path, key_path + ("path",))
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        # numpy takes a file that is neither zip nor .npy for a pickle, and says so
        why = ("it is neither an npz archive nor an .npy array" if "pickled" in str(exc)
               else str(exc))
        raise ConfigError.single(key_path + ("path",), f"not a readable .npz file: {path} ({why})")


def mmap_member(path: Path, key: str) -> np.ndarray | None:
    """The member ``key`` of an .npz as a read-only memory map, or None when it cannot be.

    Possible when the member is stored uncompressed and holds no Python objects.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(f"{key}.npy")
    except (KeyError, zipfile.BadZipFile, OSError):
        return None
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with path.open("rb") as handle:
        handle.seek(info.header_offset)
        local = handle.read(30)  # the zip local file header: name and extra field lengths
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(handle)
        offset = handle.tell()
    if dtype.hasobject or not shape:
        return None
    return np.memmap(path, dtype=dtype, mode="r", shape=shape,
                     order="F" if fortran else "C", offset=offset)


def _select(archive: Any, keys: Any, key_path: KeyPath, path: Path, mmap: bool = False) -> Tensors:
    available = list(archive.files)

    def get(key: str, at: KeyPath) -> np.ndarray:
        if key not in available:
            raise ConfigError.single(
                at,
                f"no array '{key}' in {path.name} (it has: {', '.join(available)})",
                suggestion=nearest(key, available),
            )
        mapped = mmap_member(path, key) if mmap else None
        if mapped is not None:
            return mapped
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
    # closed once the arrays are out: members are read whole, or mapped through their own
    # handle (mmap_member), so nothing keeps the file open
    with _open_npz(file, path, spec.mmap) as archive:
        x = _select(archive, spec.x, path + ("x",), file, spec.mmap)
        y = None if spec.y is None else _select(archive, spec.y, path + ("y",), file, spec.mmap)
    return Arrays(x, y, [str(file)]).check(path).with_class_ids(context, path + ("y",))


def _load_npy(file: str, at: KeyPath, mmap: bool) -> np.ndarray:
    p = require(file, at)
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
    return Arrays(x, y, files).check(path).with_class_ids(context, path + ("y",))
