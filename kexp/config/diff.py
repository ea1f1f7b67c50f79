"""Key-by-key differences between two resolved configs, and which of them a resume accepts.

Resuming a run with a different config would silently produce a run that is neither the old
experiment nor the new one. ``kexp train CONFIG --resume RUN`` (and ``kexp resume RUN --set
...``) compares the given config with the run's saved ``config.yaml``, leaf by leaf, and
refuses every difference except those in :data:`SAFE_TO_CHANGE`: keys that say how long to
train, how patient a callback is, or what is written at the end, not what is computed.

A safe key inside a list entry (``callbacks[i].<Callback>.patience``) is safe only while the
entry is the same callback: the lists are compared entry by entry first, and a callback
added, removed or replaced by another class is one refused change of the whole entry (or
list), whatever its arguments. Otherwise adding ``{EarlyStopping: {patience: 0}}`` would
look like nothing but a changed ``patience``.

    >>> changes = diff({"train": {"epochs": 3}, "seed": 1}, {"train": {"epochs": 5}, "seed": 1})
    >>> [(c.key, c.saved, c.given, c.safe) for c in changes]
    [('train.epochs', 3, 5, True)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from kexp.errors import KeyPath, format_path

#: Lists whose entries are Keras objects (``{Class: kwargs}``): an entry added, removed or
#: of another class is a change of the entry, never of its (possibly safe) arguments.
ENTRY_LISTS: tuple[tuple[str, ...], ...] = (("callbacks",),)

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
    resume may apply it. ``entries`` marks a list entry added, removed or replaced (the
    values are then the entries' class names): never safe."""

    path: KeyPath
    saved: Any
    given: Any
    entries: bool = False

    @property
    def key(self) -> str:
        return format_path(self.path)

    @property
    def safe(self) -> bool:
        return not self.entries and is_safe(self.path)

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
    """Leaves that differ between two resolved configs, in the saved config's key order.

    Entries of :data:`ENTRY_LISTS` are matched first: when the lists' lengths differ, one
    change of the whole list (its class names); when an entry's class differs, one change of
    that entry. Their leaves are not compared then (see the module doc).
    """
    entry_changes, replaced = _entry_changes(saved, given)
    a = dict(leaves(saved))
    b = dict(leaves(given))
    # a mapping or list on one side where the other has a value (``~train.class_weight``
    # makes it null): one change of the whole value, not one per leaf under it
    reshaped = [path for side, other in ((a, b), (b, a)) for path in side if path not in other
                and any(len(o) > len(path) and o[: len(path)] == path for o in other)]
    out = [Change(path, _value(saved, path), _value(given, path)) for path in reshaped
           if not any(path[: len(prefix)] == prefix for prefix in replaced)]
    replaced = replaced + reshaped
    for path in list(a) + [p for p in b if p not in a]:
        if any(path[: len(prefix)] == prefix for prefix in replaced):
            continue
        old, new = a.get(path, _MISSING), b.get(path, _MISSING)
        if old != new or type(old) is not type(new) and not _same_number(old, new):
            out.append(Change(path, None if old is _MISSING else old,
                              None if new is _MISSING else new))
    return entry_changes + out


def _value(data: Any, path: KeyPath) -> Any:
    """The value at ``path`` (keys as :func:`leaves` gives them), None where there is none."""
    for key in path:
        if isinstance(data, dict):
            data = next((v for k, v in data.items() if str(k) == key), None)
        elif isinstance(data, list) and isinstance(key, int) and key < len(data):
            data = data[key]
        else:
            return None
    return data


def _at(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def entry_name(entry: Any) -> str | None:
    """The class an entry of a Keras-object list names: ``{Class: kwargs}`` or ``"Class"``."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and len(entry) == 1:
        return str(next(iter(entry)))
    return None


def _entry_changes(
    saved: dict[str, Any], given: dict[str, Any]
) -> tuple[list[Change], list[KeyPath]]:
    """Entries added, removed or replaced in :data:`ENTRY_LISTS`, and the key paths whose
    leaves are then not compared one by one."""
    changes: list[Change] = []
    replaced: list[KeyPath] = []
    for prefix in ENTRY_LISTS:
        old, new = _at(saved, prefix), _at(given, prefix)
        old = old if isinstance(old, list) else []
        new = new if isinstance(new, list) else []
        if len(old) != len(new):
            changes.append(Change(prefix, [entry_name(e) for e in old],
                                  [entry_name(e) for e in new], entries=True))
            replaced.append(prefix)
            continue
        for index, (x, y) in enumerate(zip(old, new)):
            if entry_name(x) != entry_name(y):
                path = prefix + (index,)
                changes.append(Change(path, entry_name(x), entry_name(y), entries=True))
                replaced.append(path)
    return changes, replaced


def _same_number(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return (isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool)
            and not isinstance(b, bool) and a == b)
