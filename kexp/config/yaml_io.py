"""Read YAML safely and remember where every key came from.

Error messages must point at the line a user has to fix, so loading keeps, next to the plain
Python data, a :class:`SourceMap` from key paths to ``(file, line)``. Only PyYAML's safe loader
is used: ``!!python/...`` tags are refused, so a config can never run code by being read.
Plain scalars are typed as YAML 1.2 types them, not as PyYAML's YAML 1.1 (see ``_Loader``).

    >>> data, where = load_text("train:\\n  epochs: 3\\n", "c.yaml")
    >>> data
    {'train': {'epochs': 3}}
    >>> where.line_of(("train", "epochs"))
    2
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import yaml

from kexp.errors import ConfigError, ConfigIssue, KeyPath


class SourceMap:
    """Key path -> (file, 1-based line) for every mapping key and list item of a config."""

    def __init__(self) -> None:
        self._lines: dict[KeyPath, tuple[str, int]] = {}

    def record(self, path: KeyPath, file: str, line: int | None) -> None:
        """Remember where ``path`` was written; ``line`` is None for a ``--set`` override."""
        self._lines[tuple(path)] = (file, line)  # type: ignore[assignment]

    def update(self, other: "SourceMap", prefix: KeyPath = ()) -> None:
        for path, loc in other._lines.items():
            self._lines[prefix + path] = loc

    def __contains__(self, path: object) -> bool:
        return path in self._lines

    def under(self, prefix: KeyPath) -> list[tuple[KeyPath, tuple[str, int]]]:
        """Entries at ``prefix`` and below it, as ``(path relative to prefix, location)``."""
        n = len(prefix)
        return [(p[n:], loc) for p, loc in self._lines.items() if p[:n] == tuple(prefix)]

    def drop(self, prefix: KeyPath) -> None:
        """Forget ``prefix`` and everything below it (its value was replaced)."""
        for rest, _ in self.under(prefix):
            del self._lines[tuple(prefix) + rest]

    def copy(self, source: "SourceMap", source_prefix: KeyPath, prefix: KeyPath) -> None:
        """Take ``source``'s entries under ``source_prefix`` as this map's under ``prefix``."""
        for rest, loc in source.under(source_prefix):
            self._lines[tuple(prefix) + rest] = loc

    def move(self, old: KeyPath, new: KeyPath) -> None:
        """Entries under ``old`` now live under ``new`` (a list item changed index)."""
        moved = self.under(old)
        self.drop(old)
        for rest, loc in moved:
            self._lines[tuple(new) + rest] = loc

    def locate(self, path: KeyPath) -> tuple[str | None, int | None]:
        """The file and line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while True:
            if path in self._lines:
                return self._lines[path]
            if not path:
                return None, None
            # a mapping key YAML read as a number (class_weight's `1:`) is recorded as written
            last = path[-1]
            if isinstance(last, int) and not isinstance(last, bool):
                written = path[:-1] + (str(last),)
                if written in self._lines:
                    return self._lines[written]
            path = path[:-1]

    def line_of(self, path: KeyPath) -> int | None:
        return self.locate(path)[1]

    def items(self) -> list[tuple[KeyPath, tuple[str, int]]]:
        return list(self._lines.items())


class _Loader(yaml.SafeLoader):
    """The safe loader, reading plain scalars as YAML 1.2's core schema does; a separate
    class so kexp's tweaks never leak into ``yaml.SafeLoader``."""


# PyYAML implements YAML 1.1, whose implicit types surprise in a config: ``yes``/``no``/
# ``on``/``off`` are booleans (``activation: off``?), ``010`` is octal 8, ``1:30`` is the
# base-60 number 90, and ``3e-4`` is a string (its float pattern wants a dot). kexp reads
# plain scalars as YAML 1.2's core schema does (what every YAML 1.2 parser does): booleans
# are true/false only; integers are decimal (``010`` is 10; ``1_000`` is allowed, as in
# Python), ``0x``/``0o`` hex and octal; floats have a dot or an exponent, or are
# .inf/.nan; everything else is a string (``2024-01-01`` too, not a date). Nulls are
# unchanged (``~``, ``null``, empty).
_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
                           "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9][0-9_]*|0x[0-9a-fA-F]+|0o[0-7]+)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:\.[0-9][0-9_]*|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
    list("-+.0123456789"))


def _int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """A YAML 1.2 core integer: decimal (leading zeros are not octal), ``0x``, ``0o``."""
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("-+")
    if text.startswith("0x"):
        return sign * int(text[2:], 16)
    if text.startswith("0o"):
        return sign * int(text[2:], 8)
    return sign * int(text, 10)


_Loader.add_constructor("tag:yaml.org,2002:int", _int)


class _Dumper(yaml.SafeDumper):
    """The safe dumper, also quoting the strings kexp's loader would read as another type
    (``3e-4`` written from a string), so a dumped config reads back as it was."""


for _first, _resolvers in _Loader.yaml_implicit_resolvers.items():
    for _tag, _pattern in _resolvers:
        if _tag != "tag:yaml.org,2002:null":
            _Dumper.add_implicit_resolver(_tag, _pattern, [_first])


def _walk(node: yaml.Node, path: KeyPath, file: str, where: SourceMap, issues: list) -> None:
    where.record(path, file, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                issues.append(
                    ConfigIssue(
                        path + (key,),
                        f"duplicate key (first given on line {seen[key]}); "
                        "YAML would silently keep only the last one",
                        file=file,
                        line=line,
                    )
                )
            seen[key] = line
            _walk(value_node, path + (key,), file, where, issues)
            where.record(path + (key,), file, line)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), file, where, issues)


#: The most values a config may hold once its aliases are expanded, and the deepest it may
#: nest. A real config has hundreds of values a dozen levels deep; the limits stop a file of
#: nested aliases ("billion laughs": a few lines, 10^9 values) from hanging ``kexp validate``,
#: and a deep nesting from a ``RecursionError``.
MAX_VALUES = 100_000
MAX_DEPTH = 100


def _check_size(root: yaml.Node, file: str) -> None:
    """Refuse a document over :data:`MAX_VALUES` values (aliases expanded) or
    :data:`MAX_DEPTH` levels, counting each shared node once (linear in the file)."""
    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return list(node.value) if isinstance(node, yaml.SequenceNode) else []

    sizes: dict[int, tuple[int, int]] = {}  # finished nodes: (values, depth)
    open_nodes: set[int] = {id(root)}  # the path from the root to the node being walked
    # iterative depth-first walk: the depth a bad file gives cannot overflow it
    stack: list[tuple[yaml.Node, Iterator[yaml.Node]]] = [(root, iter(children(root)))]
    while stack:
        node, pending = stack[-1]
        child = next(pending, None)
        if child is not None:
            if id(child) in open_nodes:
                raise ConfigError.single(
                    (), "an alias (*name) here refers to a value that contains it: the "
                    "config would be infinite", file=file, line=child.start_mark.line + 1)
            if id(child) not in sizes:
                open_nodes.add(id(child))
                stack.append((child, iter(children(child))))
            continue
        stack.pop()
        open_nodes.discard(id(node))
        below = [sizes[id(c)] for c in children(node)]
        size = 1 + sum(values for values, _ in below)
        depth = 1 + max((levels for _, levels in below), default=0)
        line = node.start_mark.line + 1
        if size > MAX_VALUES:
            raise ConfigError.single(
                (), f"the YAML holds more than {MAX_VALUES:,} values once its aliases (*name) "
                "are expanded; a config never needs that many (nested aliases multiply)",
                file=file, line=line)
        if depth > MAX_DEPTH:
            raise ConfigError.single(
                (), f"the YAML nests more than {MAX_DEPTH} levels deep here; a config never "
                "needs that", file=file, line=line)
        sizes[id(node)] = (size, depth)


def load_text(text: str, file: str = "<string>") -> tuple[Any, SourceMap]:
    """Parse YAML text into plain data plus a :class:`SourceMap`; raise ConfigError if bad."""
    where = SourceMap()
    try:
        try:
            node = yaml.compose(text, Loader=_Loader)
        except RecursionError:  # PyYAML's parser recurses once per level of nesting
            raise ConfigError.single(
                (), f"the YAML nests too deeply to be read (more than {MAX_DEPTH} levels); a "
                "config never needs that", file=file) from None
        if node is None:
            return None, where
        _check_size(node, file)
        issues: list[ConfigIssue] = []
        _walk(node, (), file, where, issues)
        if issues:
            raise ConfigError(issues)
        loader = _Loader(text)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        tag = ""
        if exc.problem and "python" in exc.problem:
            tag = " (Python tags are refused: a config never runs code just by being read)"
        raise ConfigError.single(
            (),
            f"YAML value cannot be read safely: {exc.problem}{tag}",
            file=file,
            line=mark.line + 1 if mark else None,
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        start = getattr(exc, "context_mark", None)
        message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
        if start is not None and ("end of stream" in problem or "<stream end>" in problem):
            # an unclosed quote or bracket runs to the end of the file: point at its start
            what = (context or "a quote or bracket").removeprefix("while scanning ")
            what = what.removeprefix("while parsing ")
            message = (f"YAML syntax error: {what} that starts here (column {start.column + 1}) "
                       "is never closed")
            mark = start
        elif start is not None and "could not find expected ':'" in problem:
            message = "YAML syntax error: a key without ':' after it (write key: value)"
            mark = start  # the key itself, not the line after it where the scanner gave up
        elif mark is not None:
            message += f" at column {mark.column + 1}"
            if start is not None and context and start.line != mark.line:
                what = context.removeprefix("while parsing ").removeprefix("while scanning ")
                message += f", in {what} that starts on line {start.line + 1}"
        raise ConfigError.single(
            (), message, file=file, line=mark.line + 1 if mark else None
        ) from exc
    return data, where


#: The largest config file read: far above any real config, and it keeps a wrong path
#: (a data file, a device such as /dev/zero) from filling memory or never ending.
MAX_CONFIG_BYTES = 10 * 2**20


def load_file(path: str | Path) -> tuple[Any, SourceMap]:
    """Read a YAML file; a missing or unreadable file is a user error naming the path."""
    path = Path(path)
    try:
        with path.open("rb") as stream:  # at most a byte over the cap: /dev/zero never ends
            raw = stream.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError.single((), f"config file {path} is over "
                                     f"{MAX_CONFIG_BYTES // 2**20} MiB: a config is a few "
                                     "kilobytes of YAML (data goes in files it names)")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError.single((), f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError.single((), f"config path is a directory, not a YAML file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError.single((), f"cannot read config file {path}: {exc}") from None
    return load_text(text, str(path))


def dump(data: Any) -> str:
    """YAML text for a resolved config: block style, keys in the order given."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True)
