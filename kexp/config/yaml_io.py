"""Read YAML safely and remember where every key came from.

Error messages must point at the line a user has to fix, so loading keeps, next to the plain
Python data, a :class:`SourceMap` from key paths to ``(file, line)``. Only PyYAML's safe loader
is used: ``!!python/...`` tags are refused, so a config can never run code by being read.

    >>> data, where = load_text("train:\\n  epochs: 3\\n", "c.yaml")
    >>> data
    {'train': {'epochs': 3}}
    >>> where.line_of(("train", "epochs"))
    2
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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
    """The safe loader; a separate class so kexp's tweaks never leak into yaml.SafeLoader."""


# YAML 1.1 (PyYAML) reads ``3e-4`` and ``1e3`` as strings: its float pattern wants a dot.
# Everyone writes learning rates that way, and YAML 1.2 reads them as numbers, so do we.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


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


def load_text(text: str, file: str = "<string>") -> tuple[Any, SourceMap]:
    """Parse YAML text into plain data plus a :class:`SourceMap`; raise ConfigError if bad."""
    where = SourceMap()
    try:
        node = yaml.compose(text, Loader=_Loader)
        if node is None:
            return None, where
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


def load_file(path: str | Path) -> tuple[Any, SourceMap]:
    """Read a YAML file; a missing or unreadable file is a user error naming the path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError.single((), f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError.single((), f"config path is a directory, not a YAML file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError.single((), f"cannot read config file {path}: {exc}") from None
    return load_text(text, str(path))


def dump(data: Any) -> str:
    """YAML text for a resolved config: block style, keys in the order given."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
