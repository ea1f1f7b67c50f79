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
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from kexp.config.schema import PythonSource
from kexp.data.arrays import Arrays
from kexp.data.files import require
from kexp.data.stream import Stream, count, op_error
from kexp.errors import ConfigError, KeyPath, nearest
from kexp.tf import tf


def _module(name: str, at: KeyPath) -> Any:
    if name.endswith(".py"):
        file = require(name, at)
        unique = "kexp_data_" + hashlib.sha256(str(file).encode()).hexdigest()[:12]
        loader_spec = importlib.util.spec_from_file_location(unique, file)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[unique] = module
        try:
            loader_spec.loader.exec_module(module)
        except BaseException as exc:
            sys.modules.pop(unique, None)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise ConfigError.single(at, f"cannot import {file.name}: {_failure(exc)}") from exc
        return module
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise ConfigError.single(at, f"cannot import module '{name}': {exc}") from None
        raise ConfigError.single(at, f"cannot import module '{name}': {_failure(exc)}") from exc
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ConfigError.single(at, f"cannot import module '{name}': {_failure(exc)}") from exc


def _failure(exc: BaseException) -> str:
    """What the user's code raised, and where in it: ``SystemExit: sys.exit(0) (make.py,
    line 4)``. A ``sys.exit`` in a loader would otherwise end kexp itself, silently, with
    the loader's exit code."""
    if isinstance(exc, SystemExit):
        what = f"SystemExit: it called sys.exit({exc.code!r})"
    else:
        lines = str(exc).strip().splitlines()
        what = f"{type(exc).__name__}" + (f": {lines[0]}" if lines else "")
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not Path(f.filename).resolve().is_relative_to(_KEXP)]
    if frames:
        what += f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})"
    return what


#: kexp's own package: frames in it are not the user's code.
_KEXP = Path(__file__).resolve().parents[2]


def _arrays(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: np.asarray(v) for k, v in value.items()}
    return np.asarray(value)


#: Examples compared between two passes to tell a dataset that shuffles itself.
ORDER_PROBE = 64


def _check_stable_order(dataset: Any, name: str, at: KeyPath) -> None:
    """The dataset gives its examples in the same order on every pass.

    kexp shuffles (seeded) and draws fraction splits as positions in that order; a dataset
    that reshuffles itself (a ``.shuffle()`` inside) would hand validation examples to
    training on the next pass and break the resume's bit-for-bit continuation.
    """
    try:
        first, second = (list(dataset.take(ORDER_PROBE).as_numpy_iterator()) for _ in range(2))
    except tf.errors.OpError:
        return  # a dataset that fails when read: reading its first examples says how, next
    flat = [[np.asarray(leaf) for leaf in tf.nest.flatten(e)] for e in (first, second)]
    same = len(flat[0]) == len(flat[1]) and all(
        a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        for a, b in zip(*flat))
    if not same:
        raise ConfigError.single(
            at, f"{name}() returned a dataset whose order changes from pass to pass (a "
            ".shuffle() in it?): kexp shuffles, seeded, and draws splits by position, so it "
            "needs the same order every time; remove the shuffle (data.shuffle does it)")


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
    except BaseException as exc:  # SystemExit too: the user's code must not end kexp
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ConfigError.single(at, f"{name}() raised {_failure(exc)}") from exc
    file = getattr(module, "__file__", None)
    files = [str(Path(file).resolve())] if file else []
    if isinstance(result, tf.data.Dataset):
        structure = result.element_spec
        labelled = isinstance(structure, tuple) and len(structure) == 2
        try:
            length = count(result)
        except ValueError as exc:
            raise ConfigError.single(at, f"{name}() returned a dataset that {exc}") from None
        except tf.errors.OpError as exc:  # counting it read it whole: an op of it failed
            raise ConfigError.single(at, f"{name}() returned a dataset that fails when read: "
                                     f"{type(exc).__name__}: {op_error(exc.message)}") from None
        if not length:
            raise ConfigError.single(at, f"{name}() returned an empty dataset")
        _check_stable_order(result, name, at)
        # its first examples read now: a dataset that fails, or holds NaN, fails here
        stream = Stream(lambda: result, length, labelled, files, at=at, finite_guard=True)
        try:
            return stream.checked()
        except ConfigError as exc:  # a NaN is said as it is; a failing op is the function's
            failed = exc.issues[0].message.partition("reading the first examples failed: ")[2]
            if not failed:
                raise
            raise ConfigError.single(at, f"{name}() returned a dataset that fails when read: "
                                     f"{failed}") from None
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
    try:
        x, y = _arrays(x), None if y is None else _arrays(y)
    except (ValueError, TypeError) as exc:  # ragged lists, objects numpy cannot hold
        raise ConfigError.single(
            at, f"{name}() returned what numpy cannot make an array of: {exc}") from None
    return Arrays(x, y, files).check(path, ("function",)).with_class_ids(context, at)
