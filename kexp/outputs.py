"""Files the user names for kexp to write: ``predict --output``, ``evaluate --output``,
``schema --output``, ``init PATH``, ``validate --plot``.

Each is checked before the work that produces it (loading a model, predicting, drawing), so a
path that cannot be written costs nothing and is reported as the option that named it, with
exit code 2: a folder where a file is wanted, a parent that is a file (``kexp.yaml/x.yaml``),
a folder that refuses new files (read-only, ``/proc``, full). The folder test is the output
root's (:func:`kexp.preflight.writable_problem`: a real file is created and removed, since
permission bits say nothing for root or on a read-only mount). The write itself can still
fail (the disk fills up meanwhile): :func:`writing` reports that the same way.

An existing file is never replaced unless the command says it may be (``kexp schema``
replaces only a file it generated itself): nothing the user already has is overwritten. Even
``--overwrite`` never replaces the command's own input or a file kexp wrote in a run
directory (its model, manifest, checkpoints, ...).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping

from kexp.errors import UserError


def output_problem(path: Path) -> str | None:
    """Why no file can be written at ``path`` (its folder made when missing), or None.

    An existing file at ``path`` is not a problem here: whether it may be replaced is the
    caller's decision (:func:`check_output_file`).
    """
    from kexp.preflight import writable_problem

    path = Path(path)
    if path.is_dir():
        return "it is a folder; give a file name"
    if path.is_symlink() and not path.exists():
        return "it is a symbolic link to nothing (or a loop of links)"
    return writable_problem(path.absolute().parent)


def _never_replaced(path: Path, inputs: Mapping[str | Path, str]) -> str | None:
    """What the existing file ``path`` is when no option may replace it: one of the command's
    own ``inputs`` (``{path: what it is}``), or a file kexp wrote in a run directory."""
    for given, what in inputs.items():
        try:
            if os.path.samefile(path, given):
                return what
        except OSError:  # an input that is not there (yet): not this file
            continue
    from kexp.training.rundir import run_file_role

    return run_file_role(path)


def check_output_file(
    path: str | Path, option: str, *, may_replace: Callable[[Path], bool] | None = None,
    example: str | None = None, inputs: Mapping[str | Path, str] | None = None,
    suffixes: tuple[str, ...] = (),
) -> Path:
    """``path`` if kexp may write it there, else a :class:`UserError` naming ``option``.

    ``may_replace(path)`` says whether an existing file may be replaced (default: never);
    even then, the command's ``inputs`` (``{path: what it is}``) and the files of a run
    directory are never replaced. ``example`` is a file name suggested when ``path`` is a
    folder. ``suffixes``, when given, are the file types the command writes (the suffix
    chooses the format, so another one would be a file whose name says something else).
    """
    path = Path(path)
    if os.path.exists(path):
        role = _never_replaced(path, inputs or {})
        if role is not None:
            raise UserError(f"{option} {path}: it is {role}; kexp never writes over it, even "
                            "with --overwrite: give another name")
    if suffixes and path.suffix.lower() not in suffixes and not path.is_dir():
        raise UserError(f"{option} {path}: the file name must end in "
                        f"{' or '.join(suffixes)}, which chooses what is written")
    problem = output_problem(path)
    if problem is not None:
        hint = f" (e.g. {path / example})" if example and path.is_dir() else ""
        raise UserError(f"{option} {path}: cannot write it: {problem}{hint}")
    if os.path.lexists(path) and not (may_replace is not None and may_replace(path)):
        raise UserError(f"{option} {path}: the file already exists; kexp does not overwrite a "
                        "file unless told to (remove it, give another name"
                        + (", or add --overwrite)" if option == "--output" else ")"))
    return path


@contextmanager
def writing(path: str | Path, option: str) -> Iterator[None]:
    """Report an OS error while writing ``path`` (checked before, but the disk may have
    filled up since) as a user error naming ``option``, not a traceback."""
    try:
        yield
    except OSError as exc:
        why = (exc.strerror or str(exc)).lower()
        raise UserError(f"{option} {path}: cannot write it: {why}") from None
