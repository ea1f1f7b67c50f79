"""``extends:``: a config built on one or more base configs.

    # configs/digits_small.yaml
    extends: digits_cnn.yaml          # or a list; paths relative to this file
    name: digits-small
    train: {epochs: 5}
    callbacks+:                        # append to the base's callbacks instead of replacing
      - TerminateOnNaN: {}

The merge rules, applied base by base (a later base wins) and then the file itself:

* mappings merge key by key, recursively;
* lists, scalars and ``null`` replace what the base had; a key ending in ``+``
  (``callbacks+:``, ``layers+:``) appends its list to the base's list instead;
* a Keras object ``{ClassName: {kwargs}}`` merges its kwargs when the class is the same,
  and replaces the base's object whole when the class differs
  (``optimizer: {SGD: {...}}`` over ``{Adam: {...}}`` is an SGD, not a mix of both).

``extends`` chains (a base may extend another); a cycle is an error. Each file's
``${env:VAR}`` references are substituted before merging, and every key keeps the file and
line it came from, so an error in a base config points into the base config. A base that
cannot be merged (missing, broken, part of a cycle) is reported and left out, so that the
rest of the config is still checked (:mod:`kexp.config.problems`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kexp.config.interpolate import interpolate
from kexp.config.problems import LoadProblems
from kexp.config.yaml_io import SourceMap, load_file, load_text
from kexp.errors import ConfigError, ConfigIssue, KeyPath

#: The key that names base configs.
EXTENDS = "extends"
#: A key ending in this appends to the inherited list (``callbacks+``).
APPEND = "+"


def _is_object_spec(value: Any) -> bool:
    """``{ClassName: kwargs}``: one key that looks like a class name (leading capital)."""
    if not (isinstance(value, dict) and len(value) == 1):
        return False
    ((key, kwargs),) = value.items()
    return isinstance(key, str) and key[:1].isupper() and (kwargs is None or isinstance(kwargs, dict))


def _replaces(base: Any, child: Any) -> bool:
    """Whether ``child`` replaces ``base`` whole instead of merging into it."""
    if not (isinstance(base, dict) and isinstance(child, dict)):
        return True
    return _is_object_spec(base) and _is_object_spec(child) and set(base) != set(child)


def merge(
    base: Any, child: Any, where: SourceMap, child_where: SourceMap,
    path: KeyPath = (), issues: list[ConfigIssue] | None = None,
) -> Any:
    """``child`` merged over ``base`` by the rules above; ``where`` (base locations) is
    updated in place to the merged locations. Problems go to ``issues`` (or raise)."""
    own = issues is None
    issues = [] if issues is None else issues
    result = _merge(base, child, where, child_where, path, path, issues)
    if own and issues:
        raise ConfigError(issues)
    return result


def _merge(base: Any, child: Any, where: SourceMap, child_where: SourceMap,
           path: KeyPath, child_path: KeyPath, issues: list[ConfigIssue]) -> Any:
    if _replaces(base, child):
        where.drop(path)
        where.copy(child_where, child_path, path)
        return strip_append_keys(child, where, path, issues)
    out = dict(base)
    for key, value in child.items():
        key_path = child_path + (key,)
        if isinstance(key, str) and key.endswith(APPEND) and len(key) > len(APPEND):
            name = key[: -len(APPEND)]
            out[name] = _append(out.get(name), name in base, value, where, child_where,
                                path + (name,), key_path, child, issues)
        elif key in base:
            out[key] = _merge(base[key], value, where, child_where, path + (key,), key_path, issues)
            where.record(path + (key,), *child_where.locate(key_path))
        else:
            where.copy(child_where, key_path, path + (key,))
            out[key] = strip_append_keys(value, where, path + (key,), issues)
    return out


def _append(old: Any, inherited: bool, items: Any, where: SourceMap, child_where: SourceMap,
            path: KeyPath, key_path: KeyPath, child: dict, issues: list[ConfigIssue]) -> Any:
    """The inherited list ``old`` with ``items`` (written as ``name+:``) appended."""
    name = path[-1]
    file, line = child_where.locate(key_path)
    if name in child:
        issues.append(ConfigIssue(key_path, f"give either '{name}' (replace) or '{name}+' "
                                  "(append), not both", file=file, line=line))
        return old
    if not isinstance(items, list):
        issues.append(ConfigIssue(key_path, f"'{name}+' appends a list: write its items as a "
                                  "YAML list", file=file, line=line, value=items, has_value=True))
        return old
    if old is None:
        old = []
    elif not isinstance(old, list):
        issues.append(ConfigIssue(key_path, f"'{name}+' appends to a list, but the inherited "
                                  f"'{name}' is not one", file=file, line=line,
                                  value=old, has_value=True))
        return old
    if not inherited:
        where.record(path, file, line)
    for index in range(len(items)):
        where.copy(child_where, key_path + (index,), path + (len(old) + index,))
    appended = [strip_append_keys(item, where, path + (len(old) + i,), issues)
                for i, item in enumerate(items)]
    return old + appended


def strip_append_keys(data: Any, where: SourceMap, path: KeyPath,
                      issues: list[ConfigIssue]) -> Any:
    """``name+: [...]`` with nothing to append to is plain ``name: [...]``."""
    if isinstance(data, list):
        return [strip_append_keys(v, where, path + (i,), issues) for i, v in enumerate(data)]
    if not isinstance(data, dict):
        return data
    if not any(isinstance(k, str) and k.endswith(APPEND) and len(k) > 1 for k in data):
        return {k: strip_append_keys(v, where, path + (k,), issues) for k, v in data.items()}
    out: dict[Any, Any] = {}
    scratch = SourceMap()
    scratch.copy(where, path, ())
    for key, value in data.items():
        if isinstance(key, str) and key.endswith(APPEND) and len(key) > len(APPEND):
            name = key[: -len(APPEND)]
            where.drop(path + (key,))
            out[name] = _append(None, False, value, where, scratch, path + (name,), (key,),
                                data, issues)
        else:
            out[key] = strip_append_keys(value, where, path + (key,), issues)
    return out


def _bases(raw: dict, where: SourceMap, file: str,
           problems: LoadProblems) -> list[tuple[str, int | None]]:
    """The usable ``extends`` entries of a file as (path text, line); others are problems."""
    value = raw.get(EXTENDS)
    items = value if isinstance(value, list) else [value]
    found = []
    for index, item in enumerate(items):
        key = (EXTENDS, index) if isinstance(value, list) else (EXTENDS,)
        _, line = where.locate(key)
        if not isinstance(item, str) or not item.strip():
            problems.add([ConfigIssue(
                key, "extends takes a file name or a list of file names (relative to this file)",
                file=file, line=line, value=item, has_value=True,
            )], incomplete=True)
            continue
        found.append((item, line))
    return found


def _load(path: Path, label: str, text: str | None, stack: tuple[Path, ...],
          files: list[str], problems: LoadProblems) -> tuple[Any, SourceMap]:
    """Load one file (and, recursively, its bases) into merged data and locations.

    A base that cannot be merged (missing, unreadable, not a mapping, a cycle) is recorded
    in ``problems`` and left out, so the rest of the config can still be checked.
    """
    raw, where = load_text(text, label) if text is not None else load_file(label)
    if not isinstance(raw, dict):
        return raw, where  # not a mapping: the schema check says so, with its line
    raw = interpolate(raw, where, problems=problems)
    if EXTENDS not in raw:
        issues: list[ConfigIssue] = []
        raw = strip_append_keys(raw, where, (), issues)
        problems.add(issues)
        return raw, where
    merged: Any = None
    merged_where = SourceMap()
    issues = []
    for entry, line in _bases(raw, where, label, problems):
        base_path = (path.parent / Path(entry).expanduser())
        # shown in messages as the user would type it: relative when the file was named so
        base_label = (os.path.normpath(Path(label).parent / Path(entry).expanduser())
                      if text is None else str(base_path))
        resolved = _resolved(base_path)
        if resolved in stack:
            chain = " -> ".join(p.name for p in (*stack[stack.index(resolved):], resolved))
            problems.add([ConfigIssue((EXTENDS,), f"extends cycle: {chain}", file=label,
                                      line=line)], unread=False, incomplete=True)
            continue
        if not resolved.is_file():
            what = "is a folder, not a YAML file" if resolved.is_dir() else "not found"
            problems.add([ConfigIssue((EXTENDS,), f"base config {what}: {base_path}",
                                      file=label, line=line)], unread=False, incomplete=True)
            continue
        try:
            base, base_where = _load(resolved, base_label, None, (*stack, resolved), files,
                                     problems)
        except ConfigError as exc:  # the base's own YAML is broken
            problems.add(exc.issues, unread=False, incomplete=True)
            continue
        if not isinstance(base, dict):
            problems.add([ConfigIssue(
                (), "a base config must be a YAML mapping (key: value lines)",
                file=base_label, line=base_where.line_of(()),
            )], unread=False, incomplete=True)
            continue
        files.append(base_label)
        merged = base if merged is None else merge(merged, base, merged_where, base_where,
                                                  issues=issues)
        if merged is base:
            merged_where = base_where
    own = {k: v for k, v in raw.items() if k != EXTENDS}
    where.drop((EXTENDS,))
    if merged is None:  # no base could be merged: the file's own keys are all there is
        merged, merged_where = {}, SourceMap()
    result = merge(merged, own, merged_where, where, issues=issues)
    merged_where.record((), *where.locate(()))
    problems.add(issues)
    return result, merged_where


def _resolved(path: Path) -> Path:
    """``path`` made absolute with its links followed; a loop of symbolic links (which
    ``resolve`` raises as RuntimeError before Python 3.13) is left for reading the file to
    report, as an unreadable config file or base."""
    try:
        return path.resolve()
    except RuntimeError:
        return Path(os.path.abspath(path))


def compose_file(path: str | Path, problems: LoadProblems | None = None,
                 ) -> tuple[Any, SourceMap, list[str]]:
    """Load a config file with its ``extends`` chain merged in.

    Returns the merged data, where each key came from, and the base files used (as labels).
    Problems that leave the rest meaningful (an unset variable, a base that cannot be
    merged) go to ``problems`` when given, so the caller can check the rest too; without it
    they are raised together at the end.
    """
    files: list[str] = []
    path = Path(path)
    resolved = _resolved(path)
    collected = problems if problems is not None else LoadProblems()
    raw, where = _load(resolved, str(path), None, (resolved,), files, collected)
    if problems is None:
        collected.raise_if_any()
    return raw, where, files


def compose_text(text: str, base_dir: Path | None = None, problems: LoadProblems | None = None,
                 ) -> tuple[Any, SourceMap, list[str]]:
    """Like :func:`compose_file` for a config held in a string; bases relative to ``base_dir``."""
    files: list[str] = []
    anchor = (base_dir or Path.cwd()) / "<string>"
    collected = problems if problems is not None else LoadProblems()
    raw, where = _load(anchor, "<string>", text, (anchor,), files, collected)
    if problems is None:
        collected.raise_if_any()
    return raw, where, files
