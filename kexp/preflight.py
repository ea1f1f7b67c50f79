"""Preflight: what can be checked before any data is read or model built, is.

A run that dies after an hour of data loading because its output folder is read-only, or
after its first epoch because the disk is full, wastes the hour. ``kexp train`` (and
``kexp resume``) check first, and say what to fix with exit code 2:

1. :func:`check_paths` — before the model is built: every data file the config names exists;
   the output root is (or can be created as) a writable directory with some free space.
2. The accelerator asked for (``hardware.accelerator: gpu``) is there: checked by
   :mod:`kexp.hardware` when the strategy is made, which is the first thing after this and
   still before any model or data.
3. :func:`check_space` — once the model exists (it is cheap to build; the data is not yet
   read): the free space covers this run's artifacts, estimated from the model's size.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from kexp.data.files import link_problem
from kexp.errors import ConfigError, ConfigIssue, KeyPath, UserError

MIB = 1 << 20
#: Free space required before anything is known about the model: logs, manifest, history.
MIN_FREE = 64 * MIB
#: One saved copy of the model holds its weights plus about two optimizer slots per weight
#: (Adam's moments); the artifacts are model.keras/.h5 (``output.formats``), best and last
#: checkpoints, the training state (and its next generation while it is being replaced).
COPIES_BESIDES_FORMATS = 4
SAVED_BYTES_PER_WEIGHT_BYTE = 3


def _paths(value: Any, path: KeyPath) -> Iterable[tuple[KeyPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, path + (str(key),))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _paths(item, path + (index,))


def _data_paths(config: Any) -> Iterable[tuple[KeyPath, str]]:
    """Every file or folder path the data section names, with its key path."""
    for split in ("train", "validation", "test"):
        source = getattr(config.data, split, None)
        if source is None:
            continue
        fields = getattr(source, "path_fields", None)
        if fields is None:  # a source without the declaration: its ``path``, if any
            fields = ("path",) if isinstance(getattr(source, "path", None), str) else ()
        for name in fields:
            for key_path, value in _paths(getattr(source, name, None), ("data", split, name)):
                if not glob.has_magic(value):  # a glob's matches are checked by its source
                    yield key_path, value


def _writer_hint(missing: Path) -> str:
    """How to make a missing data file when a script next to it says it writes it.

    Data derived from shipped files (``configs/data/write_digits.py`` writes the PNG folders
    and TFRecords of the digits) are not in git; the first missing part of the path is
    looked for in the Python files of the folder that exists.
    """
    existing = _existing_ancestor(missing.absolute())
    if not existing.is_dir():
        return ""
    first = missing.absolute().relative_to(existing).parts[0]
    try:
        scripts = sorted(existing.glob("*.py"))[:20]
        writer = next((p for p in scripts if first in p.read_text(encoding="utf-8",
                                                                  errors="replace")), None)
    except OSError:
        return ""
    if writer is None:
        return ""
    shown = os.path.relpath(writer) if writer.is_relative_to(Path.cwd()) else str(writer)
    return f" (made by {shown}: run python {shown})"


def _located(loaded: Any, issue: ConfigIssue) -> ConfigIssue:
    try:
        return issue.located(*loaded.locate(issue.path))
    except Exception:  # a key the YAML did not write (a default): no line to give
        return issue


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


#: Why a folder refuses new files, in plain words, by errno.
_WHY_NOT_WRITABLE = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "a read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is used up",
    # an existing folder that answers "no such file" to a new one: a virtual file system
    # such as /proc, which does not hold files at all
    errno.ENOENT: "a special file system that does not hold new files",
}


def _output_problem(root: Path) -> str | None:
    """Why runs cannot be written under ``root``, or None; said in terms of ``root``."""
    existing = _existing_ancestor(root)
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    try:  # the real test: permission bits say nothing for root or on a read-only mount
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".kexp-preflight-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        why = _WHY_NOT_WRITABLE.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()
        if existing == root:
            return f"{root} is not writable: no file can be created in it ({why})"
        return (f"{root} does not exist and cannot be created: no folder can be created in "
                f"{existing} ({why})")
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE:
        return f"{existing} has only {free / MIB:.1f} MiB free (at least {MIN_FREE // MIB} MiB needed)"
    return None


def writable_problem(folder: Path) -> str | None:
    """Why files cannot be written in ``folder`` (made when missing), or None: the check of
    the output root, for the folders a config's callbacks write (kexp.training.callbacks)."""
    return _output_problem(Path(folder).absolute())


def check_paths(loaded: Any, root: Path | None, root_from_option: bool = False) -> None:
    """Data files exist and the output root is writable (every problem reported at once).

    ``root`` None skips the output check (a resume writes into its existing run directory,
    which :func:`check_run_dir` checks instead). A root given with ``--output-root`` is
    reported as that option, among the config's problems when there are some.
    """
    config = loaded.config
    issues: list[ConfigIssue] = []
    for path, value in _data_paths(config):
        if not Path(value).exists():  # a link that loops or points nowhere is said as such
            issues.append(_located(loaded, ConfigIssue(
                path, (link_problem(Path(value)) or f"no such file or folder: {value}")
                + _writer_hint(Path(value)))))
    if root is not None:
        problem = _output_problem(Path(root).absolute())
        if problem is not None:
            if root_from_option:
                message = f"--output-root {root}: cannot write runs there: {problem}"
                if not issues:
                    raise UserError(message)
                issues.append(ConfigIssue(("output", "root"), message))  # not in the YAML
            else:
                issues.append(_located(loaded, ConfigIssue(
                    ("output", "root"), f"cannot write runs under {root}: {problem}")))
    if issues:
        raise ConfigError(issues)


def check_run_dir(run_dir: Path) -> None:
    """A run directory to resume into is writable and has some free space."""
    problem = _output_problem(Path(run_dir))
    if problem is not None:
        raise UserError(f"cannot resume {run_dir}: {problem}")


def artifact_bytes(model: Any, formats: int) -> int:
    """About how much disk this run's artifacts take (see module doc)."""
    weight_bytes = 0
    for variable in model.weights:
        size = 1
        for dim in variable.shape:
            size *= int(dim or 1)
        weight_bytes += size * _itemsize(variable.dtype)
    copies = formats + COPIES_BESIDES_FORMATS
    return copies * SAVED_BYTES_PER_WEIGHT_BYTE * weight_bytes + MIN_FREE


def _itemsize(dtype: Any) -> int:
    import numpy as np

    try:
        return int(np.dtype(str(dtype)).itemsize)
    except TypeError:
        return 4


def check_space(directory: Path, model: Any, formats: int) -> None:
    """The free space where runs are written covers this model's artifacts."""
    existing = _existing_ancestor(Path(directory).absolute())
    free = shutil.disk_usage(existing).free
    needed = artifact_bytes(model, formats)
    if free < needed:
        raise UserError(
            f"not enough free space for this run under {directory}: {free / MIB:.0f} MiB "
            f"free, about {needed / MIB:.0f} MiB needed (model, checkpoints and training "
            f"state of a model with {model.count_params():,} parameters); free some space or "
            "choose another output root (output.root / --output-root)"
        )
