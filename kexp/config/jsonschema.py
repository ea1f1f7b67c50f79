"""The JSON Schema of a kexp config, for editors (``kexp schema``).

It is generated from :class:`~kexp.config.schema.ExperimentConfig`, the same typed model
that validates configs, so it cannot drift from what ``kexp validate`` accepts. Point the YAML
language server at it with a first line like::

    # yaml-language-server: $schema=kexp.schema.json

and an editor completes keys, shows each key's description and default, and underlines
unknown keys and wrong types while typing. Keras names (layers, optimizers) are free-form
here: only ``kexp validate`` knows every registered name.
"""

from __future__ import annotations

from typing import Any

from kexp.config.compose import APPEND
from kexp.config.schema import ExperimentConfig
from kexp.config.schema.common import INT64_MAX, INT64_MIN

#: The ``title`` of every schema kexp writes; also how ``kexp schema -o`` recognises a file
#: it may replace (it never overwrites anything else).
TITLE = "kexp experiment config"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _is_array(schema: dict[str, Any]) -> dict[str, Any] | None:
    """The array branch of a property schema, if it can be a list."""
    if schema.get("type") == "array":
        return schema
    for branch in schema.get("anyOf", []):
        if branch.get("type") == "array":
            return branch
    return None


def _with_append_keys(node: dict[str, Any]) -> None:
    """Let every list key ``k`` also be written ``k+`` (append to an inherited list)."""
    properties = node.get("properties")
    if not isinstance(properties, dict):
        return
    for name, prop in list(properties.items()):
        array = _is_array(prop)
        if array is not None and not name.endswith(APPEND):
            appended = {key: value for key, value in array.items() if key != "minItems"}
            appended["description"] = (
                f"Append these items to the `{name}` inherited through `extends`."
            )
            properties[name + APPEND] = appended
            # `k` replaces, `k+` appends: both at once is an error (kexp.config.compose)
            node.setdefault("dependentSchemas", {})[name + APPEND] = {"not": {"required": [name]}}


def _key_patterns(node: Any) -> None:
    """``{pattern: value schema}`` maps as ``propertyNames`` + ``additionalProperties``.

    Pydantic writes a mapping whose keys have a pattern (graph ``inputs``, ``blocks``, ...)
    as ``patternProperties``, which lets a key that does not match through unchecked; this
    form refuses it, as validation does, and reads as a map in the reference page.
    """
    if isinstance(node, list):
        for item in node:
            _key_patterns(item)
        return
    if not isinstance(node, dict):
        return
    patterns = node.get("patternProperties")
    if isinstance(patterns, dict) and len(patterns) == 1 and "additionalProperties" not in node:
        ((pattern, value),) = patterns.items()
        del node["patternProperties"]
        node["propertyNames"] = {"pattern": pattern}
        node["additionalProperties"] = value
    for value in node.values():
        _key_patterns(value)


#: Pydantic's names of numeric bounds, and JSON Schema's.
_BOUNDS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}


def _number_bounds(node: Any) -> None:
    """Bounds under their JSON Schema names everywhere, and int64's on every integer.

    Pydantic writes the bounds of an optional integer field whose type has a validator
    (``Optional[Int] = Field(gt=0)``, see :data:`kexp.config.schema.common.Int`) under its
    own names (``gt``), which JSON Schema ignores; an editor would then accept ``0``. The
    int64 range that validator checks is written where a field has no tighter bound.
    """
    if isinstance(node, list):
        for item in node:
            _number_bounds(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") in ("integer", "number"):
        for ours, theirs in _BOUNDS.items():
            if ours in node:
                node[theirs] = node.pop(ours)
    if node.get("type") == "integer":
        if "minimum" not in node and "exclusiveMinimum" not in node:
            node["minimum"] = INT64_MIN
        if "maximum" not in node and "exclusiveMaximum" not in node:
            node["maximum"] = INT64_MAX
    for value in node.values():
        _number_bounds(value)


def full_schema() -> dict[str, Any]:
    """The schema of a whole config (no ``extends``): every required key required.

    The page ``docs/config-reference.md`` is made from this one.
    """
    schema = ExperimentConfig.model_json_schema(mode="validation")
    _key_patterns(schema)
    _number_bounds(schema)
    _with_append_keys(schema)
    for definition in schema.get("$defs", {}).values():
        _with_append_keys(definition)
    return schema


#: Suffix of the ``$defs`` that describe a config which ``extends`` another (see
#: :func:`_partial`).
PARTIAL = "Partial"
#: The ``$defs`` name of the whole config, when it is one definition among others.
ROOT = "ExperimentConfig"
#: Keys whose value maps names (of properties, definitions) to schemas.
_MAPS_OF_SCHEMAS = {"properties", "$defs", "dependentSchemas", "patternProperties"}


def _partial(node: Any) -> Any:
    """A copy of a schema that a part of a config satisfies: what a config that ``extends``
    another may say.

    A child config is partial by design: its base gives ``name``, ``data.train`` and the
    rest, merged before validation (kexp.config.compose). So the keys a section requires
    (``required`` of an object section) are dropped; and a choice between data sources
    (``oneOf`` their definitions) becomes ``anyOf``, since ``{path: other.npz}`` with the
    base's ``source:`` fits several once no key is required. Everything else (unknown keys,
    types, bounds, names, exactly one model kind) still holds.
    """
    if isinstance(node, list):
        return [_partial(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _MAPS_OF_SCHEMAS and isinstance(value, dict):
            out[key] = {name: _partial(schema) for name, schema in value.items()}
        elif key == "required" and node.get("type") == "object" and "properties" in node:
            continue  # a section's required keys (not an "exactly one of" branch)
        elif key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
            out[key] = value + PARTIAL
        elif key == "oneOf" and all(isinstance(b, dict) and "$ref" in b for b in value):
            out["anyOf"] = _partial(value)
        else:
            out[key] = _partial(value)
    return out


def json_schema() -> dict[str, Any]:
    """The config's JSON Schema (draft 2020-12) as a dict.

    A config with ``extends`` is checked against the partial form of every section
    (:func:`_partial`): the keys its bases give are not missing. Any other config is
    checked against the whole schema (``if``/``else``), as ``kexp validate`` checks it.
    The root's own ``properties`` are the partial ones, so an editor completes and
    describes keys the same either way.
    """
    full = full_schema()
    definitions = full.pop("$defs", {})
    definitions[ROOT] = full
    partial = {name + PARTIAL: _partial(schema) for name, schema in definitions.items()}
    root = partial[ROOT + PARTIAL]
    head = {
        "$schema": DIALECT,
        "title": TITLE,
        "description": "A kexp experiment: data, model, compile, train, callbacks, hardware, "
        "output. Generated by `kexp schema` from the schema that validates configs.",
    }
    return {
        **head,
        **{k: v for k, v in root.items() if k not in head},
        # no `extends`: a whole config, every required key required
        "if": {"required": ["extends"]},
        "else": {"$ref": f"#/$defs/{ROOT}"},
        "$defs": {**definitions, **partial},
    }
