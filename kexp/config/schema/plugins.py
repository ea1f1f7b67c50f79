"""The ``plugins`` and ``allow_unsafe_deserialization`` keys: which user code a config may run.

A config runs no Python code of its own. The only code it can bring in is named here, so a
reviewer sees at a glance what a config executes:

    plugins:
      - components.py          # a file, relative to the config
      - my_lab.layers          # an importable module (the config's folder is searched too)

Classes and functions in a plugin that are registered with
``keras.saving.register_keras_serializable`` (or that kexp registers for them, under the
module's name) are usable by name wherever a built-in Keras name is.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field


def _plugin_entry(value: str) -> str:
    text = value.strip()
    if not text:
        raise ValueError("a plugin is a module name or a .py file path, not an empty string")
    if not is_file_entry(text) and not all(part.isidentifier() for part in text.split(".")):
        raise ValueError(
            "a plugin is a .py file (relative to the config) or a dotted module name "
            "such as my_lab.layers"
        )
    return text


def is_file_entry(entry: str) -> bool:
    """A plugin given as a file path (``components.py``, ``lib/x.py``) rather than a module.

    >>> is_file_entry("components.py"), is_file_entry("my_lab.layers")
    (True, False)
    """
    return entry.endswith(".py") or "/" in entry or "\\" in entry


PluginEntry = Annotated[str, AfterValidator(_plugin_entry)]

PluginList = Annotated[
    list[PluginEntry],
    Field(
        description=(
            "Python modules or .py files (relative to the config) imported before the model "
            "is built; their registered Keras components are usable by name."
        ),
    ),
]

UNSAFE_DESCRIPTION = (
    "Allow Lambda layers written as Python source and load this run's models with Keras' "
    "safe mode off. Both run code stored in the config or model file: only for files you trust."
)
