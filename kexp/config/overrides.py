"""``--set`` overrides: change a config from the command line without editing it.

    kexp train c.yaml --set train.epochs=5 --set compile.optimizer.Adam.learning_rate=3e-4

The syntax (one override per ``--set``):

==================================  ===========================================================
``key.path=value``                  change a key the config has, or a schema key it leaves
                                    at its default (``train.epochs``). Anything else is an
                                    error naming the nearest valid key.
``key.path[2].Name.arg=value``      list items by index (``[-1]`` is the last).
``+key.path=value``                 add a key the config does not have (a layer argument).
``+callbacks[]=value``              append to a list; ``+key[2]=value`` inserts before item 2.
``~key.path``, ``~callbacks[1]``    remove a key or a list item.
==================================  ===========================================================

Values are YAML, read like a value in the file: ``5`` is an int, ``3e-4`` a float, ``null``
is null, ``[a, b]`` a list, ``{EarlyStopping: {patience: 3}}`` a mapping; ``${env:VAR}``
works as in files. Overrides apply in order, after ``extends``, and the schema then checks
the result; an error caused by an override names the ``--set`` it came from.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from pydantic import BaseModel

from kexp.config.compose import EXTENDS
from kexp.config.interpolate import interpolate
from kexp.config.problems import LoadProblems
from kexp.config.validation import allowed_keys
from kexp.config.yaml_io import SourceMap, dump, load_text
from kexp.errors import ConfigError, ConfigIssue, format_path, nearest

#: Where an override "was written": shown in messages in place of ``file:line``.
ORIGIN_PREFIX = "--set "

#: ``[3]``, ``[-1]`` or ``[]`` (append; ``+`` overrides only).
Segment = str | int | None

_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[\s*(-?\d*)\s*\]")
_PATH = re.compile(r"[^.\[\]]+(?:\.[^.\[\]]+|\[\s*-?\d*\s*\])*")


@dataclass(frozen=True)
class Override:
    """One parsed ``--set``: what to do, where, with which value."""

    text: str
    op: Literal["set", "add", "remove"]
    path: tuple[Segment, ...]
    value: Any = None

    @property
    def origin(self) -> str:
        """How messages refer to this override."""
        return ORIGIN_PREFIX + self.text


def is_override_origin(file: str | None) -> bool:
    """Whether a SourceMap file label is a ``--set`` rather than a real file."""
    return bool(file) and file.startswith(ORIGIN_PREFIX)


def _fail(text: str, message: str, path: tuple = ()) -> ConfigError:
    return ConfigError.single(tuple(p for p in path if p is not None), message,
                              file=ORIGIN_PREFIX + text)


def parse_override(text: str) -> Override:
    """Parse ``[+|~]key.path[=value]``; the value is read as YAML."""
    body = text.strip()
    op: Literal["set", "add", "remove"] = "set"
    if body[:1] in "+~" and body:
        op = "add" if body[0] == "+" else "remove"
        body = body[1:].lstrip()
    key, eq, value_text = body.partition("=")
    key = key.strip()
    if not _PATH.fullmatch(key):
        raise _fail(text, "expected key.path=value (e.g. train.epochs=5, "
                    "+callbacks[]={TerminateOnNaN: {}}, ~callbacks[0])")
    path: list[Segment] = []
    for name, index in _TOKEN.findall(key):
        if name:
            path.append(name.strip())
        else:
            path.append(int(index) if index else None)
    if None in path[:-1] or (path[-1] is None and op != "add"):
        raise _fail(text, f"'[]' (append) is only allowed last, in an add: +{key}=...", path)
    if op == "remove":
        if eq:
            raise _fail(text, "a removal takes no value: write ~key.path", path)
        return Override(text, op, tuple(path))
    if not eq:
        raise _fail(text, f"missing '=value' (to remove a key write ~{key})", path)
    value = _parse_value(text, value_text, tuple(p for p in path if p is not None))
    return Override(text, op, tuple(path), value)


def _parse_value(text: str, value_text: str, path: tuple) -> Any:
    origin = ORIGIN_PREFIX + text
    try:
        value, where = load_text(value_text, origin)
        return interpolate(value, where)
    except ConfigError as exc:
        raise ConfigError([
            ConfigIssue(path, f"value: {issue.message}", file=origin) for issue in exc.issues
        ]) from None


def _key_text(text: str) -> str:
    """The key path part of an override as the user wrote it (no op, no value)."""
    return text.strip().lstrip("+~").partition("=")[0].strip()


def _find_key(node: dict, key: str) -> Any:
    """The dict key ``key`` names: itself, or the int it spells (``class_weight.0``)."""
    if key in node:
        return key
    try:
        number = int(key)
    except ValueError:
        return key
    return number if number in node else key


class _Applier:
    """Applies overrides one by one to a deep copy of the config, keeping the SourceMap right."""

    def __init__(self, raw: dict, where: SourceMap, schema: type[BaseModel]):
        self.raw = copy.deepcopy(raw)
        self.where = where
        self.schema = schema

    def schema_keys(self, path: tuple) -> list[str]:
        return allowed_keys(self.schema, path, self.raw)

    def _unknown(self, o: Override, node: dict, path: tuple, key: str) -> ConfigError:
        """No ``key`` under ``path``: name the nearest key (the rest of the path kept)."""
        fixed = self.schema_keys(path)  # a section of the schema: only its keys exist
        keys = list(dict.fromkeys([*map(str, node), *fixed]))
        guess = nearest(key, keys)
        listing = f" (keys here: {', '.join(keys)})" if keys and guess is None else ""
        rest = o.path[len(path) + 1:]
        # '+' adds a key to a free mapping (a layer's kwargs); in a section it would be refused
        hint = (f"; to add it anyway write +{_key_text(o.text)}=..."
                if o.op == "set" and not fixed else "")
        return ConfigError.single(
            path + (key,), f"the config has no key '{key}' here{listing}{hint}",
            suggestion=format_path(path + (guess, *rest)) if guess else None, file=o.origin,
        )

    def _container(self, o: Override) -> tuple[Any, tuple]:
        """Walk to the parent of the override's last segment, creating maps where allowed."""
        node: Any = self.raw
        path: tuple = ()
        for i, seg in enumerate(o.path[:-1]):
            nxt = o.path[i + 1]
            if isinstance(node, dict):
                if isinstance(seg, int):
                    raise _fail(o.text, f"{format_path(path) or 'the config'} is a mapping, "
                                f"not a list: no item [{seg}]", path)
                key = _find_key(node, seg)
                if key not in node or node[key] is None:
                    if key not in node and o.op != "add" and key not in self.schema_keys(path):
                        raise self._unknown(o, node, path, seg)
                    if o.op == "remove":
                        raise _fail(o.text, f"nothing to remove: {format_path(path + (key,))} "
                                    "is not set", path + (key,))
                    node[key] = [] if nxt is None or isinstance(nxt, int) else {}
                    self.where.record(path + (key,), o.origin, None)
                node, path = node[key], path + (key,)
            elif isinstance(node, list):
                index = self._index(o, node, path, seg)
                node, path = node[index], path + (index,)
            else:
                raise _fail(o.text, f"{format_path(path)} is {_kind(node)}, not a mapping or "
                            f"list; set it whole with {format_path(path)}=...", path)
        return node, path

    def _index(self, o: Override, node: list, path: tuple, seg: Segment, insert: bool = False) -> int:
        size = len(node) + (1 if insert else 0)
        if not isinstance(seg, int):
            raise _fail(o.text, f"{format_path(path)} is a list: index it as "
                        f"{format_path(path)}[0]", path)
        index = seg + len(node) if seg < 0 else seg
        if not 0 <= index < size:
            raise _fail(o.text, f"no item [{seg}]: {format_path(path)} has {len(node)} "
                        f"item{'s' if len(node) != 1 else ''}", path + (seg,))
        return index

    def apply(self, o: Override) -> None:
        if o.path[0] == EXTENDS:  # merged before overrides apply: setting it would do nothing
            raise _fail(o.text, "extends cannot be set with --set (bases are merged before "
                        "overrides); write it in the config file", (EXTENDS,))
        parent, path = self._container(o)
        last = o.path[-1]
        if isinstance(parent, list):
            if o.op == "add":
                index = len(parent) if last is None else self._index(o, parent, path, last, True)
                for j in range(len(parent) - 1, index - 1, -1):
                    self.where.move(path + (j,), path + (j + 1,))
                parent.insert(index, copy.deepcopy(o.value))
                self._record(path + (index,), o)
                return
            index = self._index(o, parent, path, last)
            if o.op == "remove":
                del parent[index]
                self.where.drop(path + (index,))
                for j in range(index + 1, len(parent) + 1):
                    self.where.move(path + (j,), path + (j - 1,))
                return
            parent[index] = copy.deepcopy(o.value)
            self._record(path + (index,), o)
            return
        if not isinstance(parent, dict):
            raise _fail(o.text, f"{format_path(path)} is {_kind(parent)}, not a mapping or list; "
                        f"set it whole with {format_path(path)}=...", path)
        if isinstance(last, int) or last is None:
            raise _fail(o.text, f"{format_path(path) or 'the config'} is a mapping, not a list",
                        path)
        key = _find_key(parent, last)
        if o.op == "remove":
            if key not in parent and key not in self.schema_keys(path):
                raise self._unknown(o, parent, path, last)
            if key not in parent:
                raise _fail(o.text, f"nothing to remove: {format_path(path + (last,))} is not "
                            "set", path + (last,))
            del parent[key]
            self.where.drop(path + (key,))
            # a "required key is missing" there is the override's doing, not the file's
            self.where.record(path + (key,), o.origin, None)
            return
        if o.op == "add" and key in parent:
            raise _fail(o.text, f"{format_path(path + (key,))} is already set; change it with "
                        f"{format_path(path + (key,))}=... (no '+')", path + (key,))
        if o.op == "set" and key not in parent and key not in self.schema_keys(path):
            raise self._unknown(o, parent, path, last)
        parent[key] = copy.deepcopy(o.value)
        self._record(path + (key,), o)

    def _record(self, path: tuple, o: Override) -> None:
        """Everything at and below ``path`` now comes from the override."""
        self.where.drop(path)

        def walk(value: Any, at: tuple) -> None:
            self.where.record(at, o.origin, None)
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(v, at + (k,))
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    walk(v, at + (i,))

        walk(o.value, path)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string"}.get(
        type(value), type(value).__name__
    )


#: Shown under the issues when an override is malformed or misplaced.
SYNTAX_HINT = "--set syntax: key.path=value, +key=value (add), +list[]=value (append), ~key (remove)"


def apply_overrides(raw: Any, where: SourceMap, overrides: Sequence[str],
                    schema: type[BaseModel], problems: LoadProblems | None = None) -> Any:
    """``raw`` with every override applied in order (a copy; ``where`` updated in place).

    Every malformed or misplaced override is reported at once in one ConfigError; with
    ``problems``, they are recorded there instead and the others still applied, so the
    schema check can report the config's other mistakes too.
    """
    if not overrides:
        return raw
    if not isinstance(raw, dict):
        return raw  # the schema check reports that the config is not a mapping
    applier = _Applier(raw, where, schema)
    issues: list[ConfigIssue] = []
    for text in overrides:
        try:
            applier.apply(parse_override(text))
        except ConfigError as exc:
            issues.extend(exc.issues)
    if issues and problems is None:
        raise ConfigError(issues, hint=SYNTAX_HINT)
    if issues:
        problems.add(issues)
        problems.hint = problems.hint or SYNTAX_HINT
    return applier.raw


#: First line of a run's ``overrides.yaml``.
RECORD_HEADER = "# the --set overrides of this run, in order; config.yaml already includes them\n"


def overrides_record(overrides: Sequence[str]) -> str:
    """A new run's ``overrides.yaml``: its ``--set`` texts as a YAML list, under a comment."""
    return RECORD_HEADER + dump(list(overrides))


def with_resume_overrides(record: str | None, overrides: Sequence[str], resume: int,
                          started_at: str) -> str:
    """A run's ``overrides.yaml`` text (None: there is none yet) with the ``--set``
    overrides of its ``resume``-th resume appended.

    The file stays one YAML list, read top to bottom as the run's history: the overrides of
    the run itself are strings; each resume adds one mapping ``{resume: N, started_at, set:
    [...]}`` whose ``N`` and ``started_at`` are those of ``resumes[N-1]`` in
    ``manifest.json``. The text is appended, so what the file held stays as it was.
    """
    text = record if record is not None else RECORD_HEADER
    if text and not text.endswith("\n"):
        text += "\n"
    entry = {"resume": resume, "started_at": started_at, "set": list(overrides)}
    note = f"# kexp resume {resume}: config.yaml includes these too\n"
    return text + note + dump([entry])
