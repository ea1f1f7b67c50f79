"""Problems found while reading a config, kept so that the schema check still runs.

Some mistakes leave the rest of a config perfectly meaningful: an unset ``${env:VAR}`` (one
value unknown), a base config that is missing, unreadable, not a mapping or part of an
``extends`` cycle (what it would have contributed is unknown), a ``key+:`` that cannot append,
a ``--set`` that names no key. Stopping at the first of them would hide every other mistake
in the same file until the next attempt, so loading records them here and goes on without
the value, base or override; the schema check then reports its own findings beside them,
leaving out the ones the missing pieces could explain (see
:func:`kexp.config.validation.issues_from`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from kexp.errors import ConfigError, ConfigIssue, KeyPath

#: A key written ``name+:`` appends to the inherited list ``name``.
_APPEND = "+"


def _target(path: KeyPath) -> KeyPath:
    """The key a problem at ``path`` leaves unknown: ``callbacks+`` stands for ``callbacks``."""
    if path and isinstance(path[-1], str) and path[-1].endswith(_APPEND) and len(path[-1]) > 1:
        return path[:-1] + (path[-1][: -len(_APPEND)],)
    return path


@dataclass
class LoadProblems:
    """What went wrong before the schema check, and what it leaves unknown."""

    issues: list[ConfigIssue] = field(default_factory=list)
    #: Key paths whose value is not what the user meant (an unset variable left as text, a
    #: failed append or override): schema errors at, under or about them would be noise.
    unread: set[KeyPath] = field(default_factory=set)
    #: A base config could not be merged: keys it would have given may be missing, and the
    #: mappings it would have merged into are not complete.
    incomplete: bool = False
    #: One more line for the user (the ``--set`` syntax, after a bad override).
    hint: str | None = None

    def add(self, issues: Iterable[ConfigIssue], *, unread: bool = True,
            incomplete: bool = False) -> None:
        """Record ``issues``; their key paths become unread (unless ``unread`` is False)."""
        issues = list(issues)
        self.issues.extend(issues)
        if unread:
            self.unread.update(_target(i.path) for i in issues if i.path)
        self.incomplete = self.incomplete or incomplete

    def raise_if_any(self, more: Iterable[ConfigIssue] = ()) -> None:
        """Raise one ConfigError with these problems and ``more`` (the schema's), if any."""
        issues = [*self.issues, *more]
        if issues:
            raise ConfigError(_in_file_order(issues), hint=self.hint)

    def __bool__(self) -> bool:
        return bool(self.issues)


def _in_file_order(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """Each file's issues by line, files in the order they first appear (stable otherwise)."""
    files: dict[str | None, int] = {}
    for issue in issues:
        files.setdefault(issue.file, len(files))
    return sorted(issues, key=lambda i: (files[i.file], i.line or 0))
