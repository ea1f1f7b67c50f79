"""Key-by-key differences between two resolved configs, and which of them a resume accepts.

Resuming a run with a different config would silently produce a run that is neither the old
experiment nor the new one. ``kexp train CONFIG --resume RUN`` (and ``kexp resume RUN --set
...``) compares the given config with the run's saved ``config.yaml``, leaf by leaf, and
refuses every difference except those in :data:`SAFE_TO_CHANGE`: keys that say how long to
train, how patient a callback is, or what is written at the end, not what is computed.

    >>> changes = diff({"train": {"epochs": 3}, "seed": 1}, {"train": {"epochs": 5}, "seed": 1})
    >>> [(c.key, c.saved, c.given, c.safe) for c in changes]
    [('train.epochs', 3, 5, True)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from kexp.errors import KeyPath, format_path

#: Key paths that may differ on a resume (``*``: any key or list index). They are applied.
SAFE_TO_CHANGE: tuple[tuple[str, ...], ...] = (
    ("description",),
    ("train", "epochs"),
    ("callbacks", "*", "*", "patience"),
    ("callbacks", "*", "*", "verbose"),
    ("output", "root"),
    ("output", "formats"),
    ("output", "formats", "*"),
    ("output", "tensorboard"),
)

_MISSING = object()


@dataclass(frozen=True)
class Change:
    """One leaf that differs: its key path, both values (None where absent), and whether a
    resume may apply it."""

    path: KeyPath
    saved: Any
    given: Any

    @property
    def key(self) -> str:
        return format_path(self.path)

    @property
    def safe(self) -> bool:
        return is_safe(self.path)

    def __str__(self) -> str:
        return f"{self.key}: {self.saved!r} -> {self.given!r}"


def describe_safe() -> str:
    """The safe keys as people write them: ``callbacks[i].<Callback>.patience``."""
    shown = []
    for pattern in SAFE_TO_CHANGE:
        if pattern[-1] == "*":
            continue  # an element of a list already named
        text = ".".join(pattern).replace("callbacks.*.*.", "callbacks[i].<Callback>.")
        shown.append(text)
    return ", ".join(shown)


def is_safe(path: KeyPath) -> bool:
    """Whether ``path`` matches a pattern of :data:`SAFE_TO_CHANGE` (or lies under one)."""
    for pattern in SAFE_TO_CHANGE:
        if len(path) < len(pattern):
            continue
        if all(p == "*" or p == str(part) for p, part in zip(pattern, path)):
            return True
    return False


def leaves(data: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    """Every leaf of nested dicts/lists with its key path (empty containers are leaves)."""
    if isinstance(data, dict) and data:
        for key, value in data.items():
            yield from leaves(value, path + (str(key),))
    elif isinstance(data, list) and data:
        for index, value in enumerate(data):
            yield from leaves(value, path + (index,))
    else:
        yield path, data


def diff(saved: dict[str, Any], given: dict[str, Any]) -> list[Change]:
    """Leaves that differ between two resolved configs, in the saved config's key order."""
    a = dict(leaves(saved))
    b = dict(leaves(given))
    out = []
    for path in list(a) + [p for p in b if p not in a]:
        old, new = a.get(path, _MISSING), b.get(path, _MISSING)
        if old != new or type(old) is not type(new) and not _same_number(old, new):
            out.append(Change(path, None if old is _MISSING else old,
                              None if new is _MISSING else new))
    return out


def _same_number(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return (isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool)
            and not isinstance(b, bool) and a == b)
