"""Errors that kexp reports to the user without a traceback.

Everything a user can get wrong (a YAML typo, an unknown layer, a missing file, a label shape
that does not fit the loss) is raised as a :class:`KexpError`. The CLI turns it into one clear
message and exit code 2; ``--debug`` shows the traceback. Anything else is a bug in kexp (or
upstream) and keeps its traceback.

A :class:`ConfigError` carries every problem found in a config at once, each pinned to its key
path and, where the YAML told us, the file and line:

    >>> issue = ConfigIssue(("train", "epoch"), "unknown key", suggestion="epochs")
    >>> str(ConfigError([issue]))
    "train.epoch: unknown key; did you mean 'epochs'?"
"""

from __future__ import annotations

import difflib
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Sequence

#: Exit code for every user mistake (config, data, paths, hardware asked for but absent).
USER_ERROR_EXIT_CODE = 2

KeyPath = tuple[str | int, ...]


def format_path(path: Sequence[str | int]) -> str:
    """Render a key path the way users write it: ``model.sequential.layers[2].Conv2D``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<config>"


def nearest(name: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The closest valid name to a misspelled one, compared case-insensitively."""
    pool = {c.lower(): c for c in candidates}
    match = difflib.get_close_matches(name.lower(), list(pool), n=1, cutoff=cutoff)
    return pool[match[0]] if match else None


class KexpError(Exception):
    """A user-facing error: printed as a message, never as a traceback, exit code 2."""

    exit_code = USER_ERROR_EXIT_CODE


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config, located by key path (and file/line when known)."""

    path: KeyPath
    message: str
    suggestion: str | None = None
    file: str | None = None
    line: int | None = None
    value: Any = field(default=None, compare=False)
    has_value: bool = field(default=False, compare=False)
    severity: str = "error"

    def located(self, file: str | None, line: int | None) -> "ConfigIssue":
        return replace(self, file=self.file or file, line=self.line or line)

    def __str__(self) -> str:
        where = ""
        if self.file and self.line:
            where = f"{self.file}:{self.line}: "
        elif self.line:
            where = f"line {self.line}: "
        elif self.file:
            where = f"{self.file}: "  # e.g. a --set override: no line to point at
        text = f"{where}{format_path(self.path)}: {self.message}"
        if self.has_value:
            shown = repr(self.value)
            if len(shown) > 80:
                shown = shown[:77] + "..."
            text += f" (got {shown})"
        if self.suggestion:
            text += f"; did you mean '{self.suggestion}'?"
        return text


class ConfigError(KexpError):
    """All the problems found in one config, reported together."""

    def __init__(self, issues: Sequence[ConfigIssue], hint: str | None = None):
        self.issues = list(issues)
        #: One more line for the user after the issues (what happens next, how to fix them).
        self.hint = hint
        super().__init__("\n".join(str(i) for i in self.issues))

    @classmethod
    def single(cls, path: KeyPath, message: str, **kwargs: Any) -> "ConfigError":
        return cls([ConfigIssue(tuple(path), message, **kwargs)])


class ConfigWarning(UserWarning):
    """A config that works but probably not as meant (a graph node that no output uses).

    Issued through :mod:`warnings`, so a notebook user sees it and a test can catch it; the
    CLI prints it like an issue, with its key path and line.
    """

    def __init__(self, issue: ConfigIssue):
        super().__init__(str(issue))
        self.issue = issue


@contextmanager
def relocating_warnings(
    relocate: Callable[[list[ConfigIssue]], list[ConfigIssue]],
) -> Iterator[None]:
    """Re-issue the ConfigWarnings raised inside the block with ``relocate`` applied.

    Warnings found after loading (a graph node no output uses) know their key path but not
    the YAML line; ``relocate`` (``LoadedConfig.locate_issues``) supplies it. Other warnings
    pass through unchanged.
    """
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConfigWarning)
            yield
    finally:
        for w in caught:
            if isinstance(w.message, ConfigWarning):
                (issue,) = relocate([w.message.issue])
                warnings.warn(ConfigWarning(issue), stacklevel=3)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


class UserError(KexpError):
    """A mistake outside the config: a missing run directory, unreadable input file, ..."""


class TrainingFailed(KexpError):
    """Training ran but did not finish well (a NaN loss, ...): exit 1, the run kept as failed."""

    exit_code = 1
