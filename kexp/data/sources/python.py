"""``source: python``: examples returned by a function the config names.

    train: {source: python, function: data/make_data.py:load, kwargs: {n: 1000}}

The function is imported and called only because the config names it here: this is code the
user chose to run, like a plugin. It returns ``(x, y)``, ``x`` alone, a dict ``{x: ..., y:
...}`` of numpy arrays (or dicts of arrays for named inputs/outputs), or a
``tf.data.Dataset`` of *unbatched* ``(x, y)`` (or ``x``) elements in a stable order. A
dataset is counted once, so fraction splits of it are drawn and recorded like any other.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

from kexp.config.schema import PythonSource
from kexp.data.arrays import Arrays
from kexp.data.stream import Stream, count
from kexp.errors import ConfigError, KeyPath, nearest
from kexp.tf import tf


def _module(name: str, at: KeyPath) -> Any:
    if name.endswith(".py"):
        file = Path(name)
        if not file.is_file():
            raise ConfigError.single(at, f"file not found: {file}")
        unique = "kexp_data_" + hashlib.sha256(str(file).encode()).hexdigest()[:12]
        loader_spec = importlib.util.spec_from_file_location(unique, file)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[unique] = module
        loader_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ConfigError.single(at, f"cannot import module '{name}': {exc}") from None


def _arrays(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: np.asarray(v) for k, v in value.items()}
    return np.asarray(value)


def load_python(spec: PythonSource, path: KeyPath, context: Any = None) -> Any:
    """Call the named function and wrap what it returns as Arrays or a Stream."""
    at = path + ("function",)
    module_name, _, name = spec.function.rpartition(":")
    module = _module(module_name, at)
    function = getattr(module, name, None)
    if not callable(function):
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise ConfigError.single(
            at, f"'{module_name}' has no function '{name}'", suggestion=nearest(name, names)
        )
    try:
        result = function(**spec.kwargs)
    except Exception as exc:
        raise ConfigError.single(
            at, f"{name}() raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    file = getattr(module, "__file__", None)
    files = [str(Path(file).resolve())] if file else []
    if isinstance(result, tf.data.Dataset):
        structure = result.element_spec
        labelled = isinstance(structure, tuple) and len(structure) == 2
        try:
            length = count(result)
        except ValueError as exc:
            raise ConfigError.single(at, f"{name}() returned a dataset that {exc}") from None
        if not length:
            raise ConfigError.single(at, f"{name}() returned an empty dataset")
        return Stream(lambda: result, length, labelled, files)
    if isinstance(result, dict) and "x" in result:
        x, y = result["x"], result.get("y")
    elif isinstance(result, (tuple, list)) and len(result) == 2:
        x, y = result
    elif isinstance(result, (np.ndarray, dict)):
        x, y = result, None
    else:
        raise ConfigError.single(
            at, f"{name}() returned {type(result).__name__}; expected (x, y), x, "
            "{'x': ..., 'y': ...} or a tf.data.Dataset"
        )
    return Arrays(_arrays(x), None if y is None else _arrays(y), files).check(path)
