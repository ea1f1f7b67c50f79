"""Building blocks shared by every section of the config schema.

The schema never imports Keras: it checks structure and types only, so ``kexp validate`` can
report a broken config before TensorFlow has even started to load. Whether a name (a layer,
an optimizer) exists in Keras is checked afterwards by :mod:`kexp.resolve`.

A Keras object is written the way Keras' own ``get()`` functions accept it, either a bare name
or a one-key mapping from class name to keyword arguments:

    optimizer: adam
    optimizer: {Adam: {learning_rate: 0.001}}
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


#: The range of TensorFlow's int64, the widest integer a tensor (a batch size, a buffer
#: size, a shape) holds: a larger Python int passes Python and pydantic but crashes TF the
#: first time it becomes a tensor ("Can't convert Python sequence with out-of-range integer"),
#: usually after the run directory exists.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: The largest int32, for values TF or Keras hold as int32 (class ids of labels, image
#: sizes, Keras' step counter inside one ``steps_per_execution``).
INT32_MAX = 2**31 - 1



def _int64(value: int) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(
            "is out of the range of integers TensorFlow holds (int64: from -2^63 to "
            f"2^63-1 = {INT64_MAX:,})"
        )
    return value


#: Every integer of kexp's own keys. Strict: ``true`` is not 1 and the string ``"16"`` is not
#: 16 (YAML reads ``16`` as a number and ``"16"`` as text, so quotes around a count are a
#: mistake worth reporting, as is a boolean where a count goes); a float, even ``32.0``, is
#: not an integer either. Bounded to int64 (see :data:`INT64_MAX`) by a validator rather than
#: ``le``/``ge``, which a field's own tighter ``le`` (an int32 bound, said why in its
#: description) would be overridden by: pydantic keeps the last of two ``le``.
Int = Annotated[int, Strict(), AfterValidator(_int64)]

#: Every real number of kexp's own keys: an int is a number too (``learning_rate: 1``), a
#: boolean or a string is not; inf and nan are refused (``.inf`` is valid YAML, but no
#: weight, fraction, rate or timeout of kexp means anything at infinity).
Float = Annotated[float, Strict(), Field(allow_inf_nan=False)]

#: Every yes/no of kexp's own keys: ``true`` or ``false`` only. Lax pydantic takes 1, 0 and
#: the strings "yes", "on", "1" too, so ``deterministic: 1`` or a quoted ``"off"`` would pass
#: as a boolean where the integer keys refuse ``true``: one rule for both.
Bool = Annotated[bool, Strict()]


def _one_key(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) != 1:
            raise ValueError(
                "write a Keras object as a bare name or as a mapping with exactly one key, "
                "the class name: {Name: {kwarg: value, ...}}"
                + (f"; found keys {sorted(map(str, value))}" if value else "")
            )
        (kwargs,) = value.values()
        if kwargs is not None and not isinstance(kwargs, dict):
            raise ValueError(
                "the keyword arguments of a Keras object must be a mapping "
                "(use {} for none)"
            )
    return value


KerasSpec = Annotated[
    Union[str, dict[str, Optional[dict[str, Any]]]],
    AfterValidator(_one_key),
    Field(
        description="A Keras object: a bare name (`adam`) or `{ClassName: {kwarg: value}}`.",
        json_schema_extra={"maxProperties": 1, "minProperties": 1},
    ),
]


def exactly_one_of(*keys: str) -> dict[str, Any]:
    """JSON Schema saying what a "give exactly one of" model validator checks: one of
    ``keys`` is set (not null), never two. Pydantic cannot derive it from the validator, so
    each section that has one passes this as ``json_schema_extra``; editors then flag a
    model with both ``sequential`` and ``functional`` (or neither) as ``kexp validate`` does.
    """
    return {
        "oneOf": [
            {"required": [key], "properties": {key: {"not": {"type": "null"}}}} for key in keys
        ]
    }


def spec_parts(spec: Any) -> tuple[str, dict[str, Any]]:
    """Split a :data:`KerasSpec` into ``(name, kwargs)``.

    >>> spec_parts({"Dense": {"units": 3}})
    ('Dense', {'units': 3})
    >>> spec_parts("adam")
    ('adam', {})
    """
    if isinstance(spec, str):
        return spec, {}
    ((name, kwargs),) = spec.items()
    # nested mappings and lists copied too: Keras keeps (and TensorFlow's tracking wraps)
    # what it is given, and the config must stay as the user wrote it
    return str(name), {key: copy.deepcopy(value) if isinstance(value, (dict, list)) else value
                       for key, value in (kwargs or {}).items()}
