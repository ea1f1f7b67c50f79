"""Turn pydantic's validation errors into :class:`~kexp.errors.ConfigIssue` s a user can act on.

Pydantic reports locations in its own terms: union branches (``str``, ``dict[...]``) and
discriminator tags (``npz``) appear inside the path. This module maps each error back to the
key path the user wrote, the YAML line it is on, and a "did you mean" for misspelled keys and
choices, and merges the one-error-per-union-branch noise into one message.
"""

from __future__ import annotations

import re
import typing
from dataclasses import replace
from typing import Any, Collection, Iterable

from pydantic import BaseModel, ValidationError

from kexp.config.yaml_io import SourceMap
from kexp.errors import ConfigIssue, KeyPath, nearest

_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "none_required": "null",
}


def _get(data: Any, key: Any) -> tuple[bool, Any]:
    if isinstance(data, dict) and key in data:
        return True, data[key]
    if isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data):
        return True, data[key]
    return False, None


def user_path(loc: Iterable[Any], raw: Any, error_type: str) -> KeyPath:
    """The key path as written in the YAML: drop pydantic's union-branch and tag labels.

    A label can collide with a real key (the tag ``split`` of ``{split: 0.2, seed: 3}``), so
    every reading of ``loc`` (each part a key or a label) is tried; the best one names the
    offending key last (for unknown and missing keys) and uses the most real keys.
    """
    loc = list(loc)
    leaf = error_type in {"missing", "extra_forbidden"}
    memo: dict[tuple[int, int], tuple[tuple[bool, int], KeyPath]] = {}

    def best(index: int, node: Any) -> tuple[tuple[bool, int], KeyPath]:
        if index == len(loc):
            return (False, 0), ()
        key = (index, id(node))
        if key in memo:
            return memo[key]
        part = loc[index]
        last = index == len(loc) - 1
        options = []
        found, child = _get(node, part)
        if found:
            (ends, size), rest = best(index + 1, child)
            options.append(((ends or last, size + 1), (part,) + rest))
        elif last and leaf and isinstance(node, dict):
            options.append(((True, 1), (part,)))
        # or it is a union branch ("str", "dict[str,...]") or a tag ("npz"): skip it
        options.append(best(index + 1, node))
        memo[key] = max(options, key=lambda option: option[0])  # first wins a tie
        return memo[key]

    score, path = best(0, raw)
    return path


def _candidate_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_candidate_models(arg))
    return found


def _pick_model(candidates: list[type[BaseModel]], node: Any) -> list[type[BaseModel]]:
    if len(candidates) <= 1 or not isinstance(node, dict):
        return candidates
    for model in candidates:
        field = model.model_fields.get("source")
        if field is not None and node.get("source") in typing.get_args(field.annotation):
            return [model]
    with_keys = [m for m in candidates if set(node) & set(m.model_fields) - {"source"}]
    return with_keys or candidates


def allowed_keys(schema: type[BaseModel], path: KeyPath, raw: Any) -> list[str]:
    """The keys a mapping at ``path`` may have, following the schema and the data together."""
    models: list[type[BaseModel]] = [schema]
    node = raw
    for part in path:
        annotations = []
        for model in models:
            field = model.model_fields.get(part) if isinstance(part, str) else None
            if field is not None:
                annotations.append(field.annotation)
        _, node = _get(node, part)
        if isinstance(part, int):
            continue  # a list item: keep the item type found for the list itself
        models = []
        for annotation in annotations:
            models.extend(_candidate_models(annotation))
        models = _pick_model(models, node)
        if not models:
            return []
    keys: list[str] = []
    for model in models:
        keys.extend(k for k in model.model_fields if k not in keys)
    return keys


def _choices(ctx: dict[str, Any]) -> list[str]:
    return re.findall(r"'([^']*)'", str(ctx.get("expected", "")))


def issues_from(
    exc: ValidationError, raw: Any, where: SourceMap, schema: type[BaseModel],
    unread: Collection[KeyPath] = (), incomplete: bool = False,
) -> list[ConfigIssue]:
    """One :class:`ConfigIssue` per problem, in file order, union noise merged.

    ``unread`` and ``incomplete`` describe what loading could not read
    (:class:`kexp.config.problems.LoadProblems`): errors those gaps could explain are left
    out, the rest of the config's mistakes are reported with them (:func:`_meaningful`).
    """
    grouped: dict[KeyPath, list[dict[str, Any]]] = {}
    for error in exc.errors():
        path = user_path(error["loc"], raw, error["type"])
        grouped.setdefault(path, []).append(error)
    _drop_shallow_branch_errors(grouped, raw)

    found_issues: list[tuple[ConfigIssue, str]] = []
    for path, errors in grouped.items():
        file, line = where.locate(path)
        types = [e["type"] for e in errors]
        found, value = _get_path(raw, path)
        if all(t in _TYPE_WORDS for t in types) and len(errors) > 1:
            wanted = " or ".join(dict.fromkeys(_TYPE_WORDS[t] for t in types))
            found_issues.append((
                ConfigIssue(path, f"expected {wanted}{_yaml11_hint(value, wanted)}",
                            file=file, line=line,
                            value=value, has_value=found),
                _TYPE,
            ))
            continue
        # a union where one branch got further than a type check tells the real story
        specific = [e for e in errors if e["type"] not in _TYPE_WORDS] or errors
        for error in specific:
            kind = _TYPE if error["type"] in _TYPE_WORDS else error["type"]
            found_issues.append((_issue(error, path, raw, schema, file, line, value, found), kind))
    kept = [(_with_value(_at_own_line(issue, where), kind, raw), kind)
            for issue, kind in found_issues if _meaningful(issue, kind, raw, unread, incomplete)]
    issues = _merge_misspelled_keys([issue for issue, _ in kept])
    issues.sort(key=lambda i: (i.line or 0))
    return issues


#: Scalars YAML 1.1 (PyYAML) reads as booleans, which kexp reads as text (YAML 1.2).
_YAML11_BOOLEANS = {"yes": True, "no": False, "on": True, "off": False, "y": True, "n": False}


def _yaml11_hint(value: Any, wanted: str) -> str:
    """Why ``yes``/``no``/``on``/``off`` is not a boolean here, and what to write instead."""
    if wanted != "true or false" or not isinstance(value, str):
        return ""
    meant = _YAML11_BOOLEANS.get(value.lower())
    if meant is None:
        return ""
    return (f"; kexp reads YAML 1.2, where '{value}' is text, not a boolean: write "
            f"{str(meant).lower()}")


#: The kind of every "expected <type>" error (a wrong type is wrong whatever else is there).
_TYPE = "type"
#: Error kinds about a key rather than its value: the value is not what needs fixing.
_KEY_KINDS = {"extra_forbidden", "missing"}


def _at_own_line(issue: ConfigIssue, where: SourceMap) -> ConfigIssue:
    """The issue at the line of its own key, when it names a key below the one pydantic
    reported (a source's ``source:`` on its own line under ``train:``)."""
    if issue.path not in where:
        return issue
    file, line = where.locate(issue.path)
    return replace(issue, file=file, line=line)


def _with_value(issue: ConfigIssue, kind: str, raw: Any) -> ConfigIssue:
    """Show the offending value ("(got 'npzz')") wherever the issue names one the user wrote.

    Messages are built per error kind, and some point below the key pydantic reported (a
    data source's ``source``), so the value is looked up once more at the issue's own path.
    A mapping is not shown (the issue is about its keys), nor a value the message quotes.
    """
    if issue.has_value or kind in _KEY_KINDS:
        return issue
    found, value = _get_path(raw, issue.path)
    if not found or isinstance(value, dict) or repr(value) in issue.message:
        return issue
    return replace(issue, value=value, has_value=True)


def _is_under(path: KeyPath, prefix: KeyPath) -> bool:
    return path[: len(prefix)] == prefix


def _meaningful(issue: ConfigIssue, kind: str, raw: Any, unread: Collection[KeyPath],
                incomplete: bool) -> bool:
    """Whether a schema error stands on its own, given what loading could not read.

    * at or under an unread value (an unset variable left as ``${env:X}``): noise;
    * an unknown key, a wrong type or a wrong choice is wrong whatever else the config holds;
    * a check of a section (a missing key, "exactly one of", a source without ``source``)
      that contains an unread value may have been misled by it;
    * with a base config left out, a key it would have given may be "missing" and a mapping
      may lack what it would have merged in: only errors about a value written here count.
    """
    if any(_is_under(issue.path, p) for p in unread):
        return False
    if kind in {"extra_forbidden", _TYPE, "literal_error"}:
        return True
    if any(_is_under(p, issue.path) for p in unread):
        return False
    if incomplete:
        found, value = _get_path(raw, issue.path)
        return kind != "missing" and found and not isinstance(value, dict)
    return True


_UNKNOWN_KEY = "unknown key"
_MISSING_KEY = "required key is missing"


def _merge_misspelled_keys(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """``input:`` for a required ``inputs:`` is one mistake, not two: the "unknown key
    'input'; did you mean 'inputs'" issue says it all, so "inputs is missing" goes."""
    meant = {
        i.path[:-1] + (i.suggestion,)
        for i in issues
        if i.message.startswith(_UNKNOWN_KEY) and i.suggestion
    }
    return [i for i in issues if not (i.message == _MISSING_KEY and i.path in meant)]


def _drop_shallow_branch_errors(grouped: dict[KeyPath, list[dict[str, Any]]], raw: Any) -> None:
    """A mapping or list where a union also allows a scalar: pydantic reports "expected a
    string" at the key *and* the real mistake deeper down (another branch got further).
    The deeper one tells the story; the type error at the key is noise."""
    for path in list(grouped):
        deeper = any(len(other) > len(path) and other[: len(path)] == path for other in grouped)
        found, value = _get_path(raw, path)
        if deeper and found and isinstance(value, (dict, list)):
            rest = [e for e in grouped[path] if e["type"] not in _TYPE_WORDS]
            if rest:
                grouped[path] = rest
            else:
                del grouped[path]


def _get_path(raw: Any, path: KeyPath) -> tuple[bool, Any]:
    node = raw
    for part in path:
        found, node = _get(node, part)
        if not found:
            return False, None
    return True, node


def _text(message: str) -> str:
    """Pydantic's message as part of a sentence: no "Value error, " prefix, lower case."""
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return message[:1].lower() + message[1:]


def _issue(
    error: dict[str, Any],
    path: KeyPath,
    raw: Any,
    schema: type[BaseModel],
    file: str | None,
    line: int | None,
    value: Any,
    found: bool,
) -> ConfigIssue:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        keys = allowed_keys(schema, path[:-1], raw)
        return ConfigIssue(
            path,
            _UNKNOWN_KEY + (f" (allowed here: {', '.join(keys)})" if keys else ""),
            suggestion=nearest(str(path[-1]), keys),
            file=file,
            line=line,
        )
    if kind == "missing":
        return ConfigIssue(path, _MISSING_KEY, file=file, line=line)
    if kind == "literal_error":
        choices = _choices(ctx)
        return ConfigIssue(
            path,
            f"must be one of {', '.join(choices)}",
            suggestion=nearest(str(value), choices) if found else None,
            file=file,
            line=line,
            value=value,
            has_value=found,
        )
    if kind == "unknown_source":
        from kexp.config.schema.data import SOURCE_KINDS

        source = value.get("source") if isinstance(value, dict) else None
        suggestion = nearest(str(source), SOURCE_KINDS) if source is not None else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
            suggestion = f"{{split: {value}}}"  # `validation: 0.2` meant a fraction
        return ConfigIssue(
            path + (("source",) if source is not None else ()),
            error["msg"],
            suggestion=suggestion,
            file=file,
            line=line,
            value=value,
            has_value=found and not isinstance(value, dict),
        )
    if error["loc"][-1:] == ("[key]",):  # a mapping's key, not its value
        rule = (f"must be {_TYPE_WORDS[kind]}" if kind in _TYPE_WORDS
                else _text(error["msg"]).removeprefix("input "))
        # the key as written: pydantic's location turns a key `true` into 1
        return ConfigIssue(path, f"each key here {rule}", file=file, line=line,
                           value=error.get("input", path[-1]), has_value=True)
    if kind in _TYPE_WORDS:  # "Input should be a valid dictionary or instance of ..."
        wanted = _TYPE_WORDS[kind]
        return ConfigIssue(path, f"expected {wanted}{_yaml11_hint(value, wanted)}", file=file,
                           line=line, value=value, has_value=found)
    message = _text(error["msg"])
    # a whole mapping (what a section-level check is about) is no help when echoed back
    shown = found and not isinstance(value, dict)
    return ConfigIssue(path, message, file=file, line=line, value=value, has_value=shown)
