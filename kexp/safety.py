"""Keep code out of configs and model files unless the user opts in.

A config is data: reading it never runs code (YAML python tags are refused in
:mod:`kexp.config.yaml_io`), and the only user code it brings in is the ``plugins`` it names.
Two things would break that promise, and both are refused unless the config says
``allow_unsafe_deserialization: true``:

* a ``Lambda`` layer whose function is Python source (``function: "lambda x: x / 16"``): the
  source runs when the model is built, and Keras stores it as bytecode in every saved model;
* loading a model whose file holds such bytecode: Keras' safe mode refuses it, and kexp keeps
  safe mode on for every load unless the run's config opted in.

A ``Lambda`` whose function is *named* (a function registered by a plugin, or a
``keras.activations`` function) is safe: Keras saves the name, not the code.
"""

from __future__ import annotations

import builtins
import contextvars
from contextlib import contextmanager
from typing import Any, Iterator

from kexp.errors import ConfigError, KeyPath

OPT_IN = "allow_unsafe_deserialization"

RISK = (
    "a Lambda written as Python source runs that code when the model is built, and Keras "
    "stores it as Python bytecode in every saved model, so anyone loading the model runs it "
    "too (Keras' safe mode refuses such files)"
)

HOW_TO = (
    "write the function in a plugin file (listed under plugins:) and name it "
    "(Lambda: {function: my_function}), or write a custom layer; if you trust this config "
    f"and every model it produces, set {OPT_IN}: true at the top level"
)

_UNSAFE: contextvars.ContextVar[bool] = contextvars.ContextVar("kexp_unsafe", default=False)

#: Arguments of ``keras.layers.Lambda`` that may hold a function.
_FUNCTION_ARGS = ("function", "output_shape", "mask")


@contextmanager
def unsafe_allowed(allowed: bool) -> Iterator[None]:
    """While building the model of a config with (or without) the opt-in."""
    token = _UNSAFE.set(bool(allowed))
    try:
        yield
    finally:
        _UNSAFE.reset(token)


def is_source(value: Any) -> bool:
    """A string of Python source for a function (``lambda x: ...``), not a function's name.

    >>> is_source("lambda x: x * 2"), is_source("my_function")
    (True, False)
    """
    return isinstance(value, str) and value.lstrip().startswith("lambda")


def lambda_arguments(kwargs: dict[str, Any], path: KeyPath) -> dict[str, Any]:
    """``Lambda``'s kwargs with its function(s) resolved: a registered name, or opted-in source."""
    if "function" not in kwargs:
        raise ConfigError.single(path, "Lambda needs a function: the name of a plugin function")
    out = dict(kwargs)
    for key in _FUNCTION_ARGS:
        value = kwargs.get(key)
        if not isinstance(value, str):
            continue
        if is_source(value):
            if not _UNSAFE.get():
                raise ConfigError.single(
                    path + (key,), f"refused: {RISK}. Instead, {HOW_TO}"
                )
            out[key] = _compile(value, path + (key,))
        else:
            out[key] = named_function(value, path + (key,))
    return out


def named_function(name: str, path: KeyPath) -> Any:
    """A function registered by a plugin (or a Keras activation), by name."""
    from kexp.resolve import lookup

    found = lookup("activation", name, path)
    if not callable(found) or isinstance(found, type):
        raise ConfigError.single(path, f"'{name}' is not a function")
    return found


def _compile(source: str, path: KeyPath) -> Any:
    """Evaluate opted-in source with only Python's builtins in scope.

    That is all a reloaded Lambda sees too (Keras rebuilds it from bytecode in a module of its
    own), so a function that works when training also works after loading.
    """
    try:
        code = compile(source, "<config>", "eval")
        function = eval(code, {"__builtins__": builtins})  # noqa: S307 (the user opted in)
    except SyntaxError as exc:
        raise ConfigError.single(path, f"not valid Python: {exc.msg}") from None
    if not callable(function):
        raise ConfigError.single(path, "the source must be a function, e.g. 'lambda x: x * 2'")
    return function


def find_serialized_code(raw: Any, path: KeyPath = ()) -> list[KeyPath]:
    """Key paths of Keras-serialized Python code (``class_name: __lambda__``) in plain data."""
    found: list[KeyPath] = []
    if isinstance(raw, dict):
        if raw.get("class_name") in ("__lambda__", "__bytecode__") or "__lambda__" in raw:
            found.append(path)
        for key, value in raw.items():
            found.extend(find_serialized_code(value, path + (key,)))
    elif isinstance(raw, list):
        for index, value in enumerate(raw):
            found.extend(find_serialized_code(value, path + (index,)))
    return found


def check_config(raw: Any) -> None:
    """Refuse serialized Python code written into a config (it would run on deserialization)."""
    paths = find_serialized_code(raw)
    if paths:
        raise ConfigError.single(
            paths[0],
            "refused: this is serialized Python code (class_name: __lambda__), which would run "
            f"when Keras deserializes it. Instead, {HOW_TO.split('; if')[0]}",
        )


def load_refusal(path: Any) -> str:
    """The message for a model file that Keras' safe mode refused to load."""
    return (
        f"refused to load {path}: it holds Python bytecode (a Lambda layer written as source), "
        "which would run on loading; kexp loads models in Keras' safe mode. If you trust the "
        f"file, load it through a run whose config sets {OPT_IN}: true, or in Python with "
        "keras.models.load_model(path, safe_mode=False)"
    )


def is_safe_mode_refusal(exc: BaseException) -> bool:
    text = str(exc)
    return "safe_mode" in text and "lambda" in text.lower()
