"""Resolve the names in a config to Keras objects, through Keras' own registries.

Nothing here is a hand-written whitelist: a layer is whatever ``keras.layers`` (or a
registered custom object) calls that name, an optimizer whatever ``keras.optimizers.get``
accepts, and so on. Keyword arguments are checked against the real constructor signature
before Keras sees them, so a typo is reported with its key path and the nearest valid
argument instead of surfacing as a stack trace from deep inside Keras:

    >>> layer = make_layer({"Dense": {"units": 4}}, ("model", "layers", 0))
    >>> type(layer).__name__
    'Dense'
    >>> make_layer({"Dense": {"unit": 4}}, ("layers", 0))
    Traceback (most recent call last):
    kexp.errors.ConfigError: layers[0].Dense.unit: Dense takes no argument 'unit'; did you mean 'units'?
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from kexp.config.schema import spec_parts
from kexp.errors import ConfigError, ConfigIssue, KeyPath, nearest
from kexp.tf import keras

_MODULES = {
    "layer": "keras.layers",
    "callback": "keras.callbacks",
    "optimizer": "keras.optimizers",
    "loss": "keras.losses",
    "metric": "keras.metrics",
}

#: Arguments that ``keras.layers.Layer.__init__`` takes through ``**kwargs``.
_LAYER_BASE_KWARGS = {"input_shape", "input_dim", "batch_size", "batch_input_shape"}


def _public_namespace(module: Any, base: type | None = None) -> dict[str, Any]:
    """Every public class (or function) a Keras API module exports, by name."""
    names = {}
    for name in dir(module):
        if name.startswith("_"):
            continue
        obj = getattr(module, name)
        if base is None or (isinstance(obj, type) and issubclass(obj, base)):
            names[name] = obj
    return names


@functools.lru_cache(maxsize=None)
def _namespaces() -> dict[str, dict[str, Any]]:
    return {
        "layer": _public_namespace(keras.layers, keras.layers.Layer),
        "callback": _public_namespace(keras.callbacks, keras.callbacks.Callback),
        "optimizer": _public_namespace(keras.optimizers, keras.optimizers.Optimizer),
        "loss": _public_namespace(keras.losses),
        "metric": _public_namespace(keras.metrics),
    }


def known_names(kind: str) -> list[str]:
    """Names a config may use for ``kind`` (built-ins and registered custom objects)."""
    custom = keras.saving.get_custom_objects()
    return sorted(set(_namespaces()[kind]) | {k.split(">")[-1] for k in custom} | set(custom))


def accepted_kwargs(cls: type) -> set[str] | None:
    """Keyword arguments ``cls(...)`` accepts, following ``**kwargs`` up the class chain.

    Returns None when some constructor forwards ``**kwargs`` to a base that accepts anything.
    """
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass is object:
            return names
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return None
        names |= {
            p.name
            for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
        }
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
        if klass is keras.layers.Layer:
            return names | _LAYER_BASE_KWARGS
    return None


def check_kwargs(cls: type, kwargs: dict[str, Any], path: KeyPath, what: str) -> None:
    """Raise ConfigError listing every keyword argument ``cls`` does not take."""
    accepted = accepted_kwargs(cls)
    if accepted is None:
        return
    issues = [
        ConfigIssue(
            path + (key,),
            f"{what} takes no argument '{key}'",
            suggestion=nearest(key, accepted),
        )
        for key in kwargs
        if key not in accepted
    ]
    if issues:
        raise ConfigError(issues)


def lookup(kind: str, name: str, path: KeyPath) -> Any:
    """The class or function registered under ``name`` for ``kind``; ConfigError if none."""
    found = keras.saving.get_registered_object(name, module_objects=_namespaces()[kind])
    if found is None:
        raise ConfigError.single(
            path,
            f"unknown {kind} '{name}' (not in {_MODULES[kind]} nor a registered custom object)",
            suggestion=nearest(name, known_names(kind)),
        )
    return found


def _construct(factory: Callable[..., Any], kwargs: dict[str, Any], path: KeyPath, what: str) -> Any:
    """Call a Keras constructor; its argument errors become config errors at ``path``."""
    try:
        return factory(**kwargs)
    except Exception as exc:  # Keras raises AttributeError/KeyError/... for wrong types too
        raise ConfigError.single(path, f"{what} rejected its arguments: {_first_line(exc)}") \
            from exc


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


#: Layer arguments that take a layer (``Bidirectional(layer=LSTM(...))``).
_LAYER_ARGS = {"layer", "backward_layer"}


def _is_object_spec(value: Any) -> bool:
    """``{ClassName: {kwargs}}``: one key that looks like a class name."""
    if not (isinstance(value, dict) and len(value) == 1):
        return False
    ((key, kwargs),) = value.items()
    return isinstance(key, str) and key[:1].isupper() and (kwargs is None or isinstance(kwargs, dict))


def keras_arguments(kwargs: dict[str, Any], path: KeyPath) -> dict[str, Any]:
    """Config kwargs in the form Keras takes them.

    A nested ``{L2: {l2: 0.01}}`` (a regularizer, initializer, constraint, ...) becomes Keras'
    own serialized form ``{"class_name": "L2", "config": {...}}``, which every ``get()`` of
    Keras accepts; a nested layer (``Bidirectional``'s ``layer``) is built as a layer.
    """
    out = {}
    for key, value in kwargs.items():
        if key in _LAYER_ARGS and (_is_object_spec(value) or isinstance(value, str)):
            out[key] = make_layer(value, path + (key,))
        elif _is_object_spec(value):
            ((name, inner),) = value.items()
            out[key] = {"class_name": name, "config": dict(inner or {})}
        else:
            out[key] = value
    return out


def make_layer(spec: Any, path: KeyPath) -> Any:
    """A new ``keras.layers.Layer`` from ``Name`` or ``{Name: kwargs}``."""
    name, kwargs = spec_parts(spec)
    cls = lookup("layer", name, path)
    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
        raise ConfigError.single(path, f"'{name}' is not a Keras layer class")
    check_kwargs(cls, kwargs, path + (name,), name)
    arguments = keras_arguments(kwargs, path + (name,))
    return _construct(cls, arguments, path + (name,), name)


def make_callback(spec: Any, path: KeyPath, defaults: dict[str, Any] | None = None) -> Any:
    """A ``keras.callbacks.Callback``; ``defaults`` fill arguments the user did not give."""
    name, kwargs = spec_parts(spec)
    cls = lookup("callback", name, path)
    check_kwargs(cls, kwargs, path + (name,), name)
    merged = {**(defaults or {}), **kwargs}
    return _construct(cls, merged, path + (name,), name)


def _from_get(kind: str, get: Callable[[Any], Any], spec: Any, path: KeyPath) -> Any:
    """Resolve with Keras' ``get()``: a bare name as Keras takes it, kwargs through its class."""
    name, kwargs = spec_parts(spec)
    if isinstance(spec, str):
        try:
            return get(name)
        except (ValueError, TypeError):
            raise ConfigError.single(
                path,
                f"unknown {kind} '{name}'",
                suggestion=nearest(name, known_names(kind)),
            ) from None
    cls = keras.saving.get_registered_object(name, module_objects=_namespaces()[kind])
    if cls is None:
        try:  # an alias only Keras' get() knows, such as "mse"
            found = get(name)
        except (ValueError, TypeError):
            lookup(kind, name, path)  # raises the "unknown ..., did you mean" error
        cls = found if inspect.isfunction(found) else type(found)
    if not isinstance(cls, type):
        raise ConfigError.single(
            path + (name,),
            f"'{name}' is a function and takes no arguments; use its class (e.g. "
            f"{_class_hint(kind, getattr(cls, '__name__', name))}) to pass arguments",
        )
    check_kwargs(cls, kwargs, path + (name,), name)
    return _construct(cls, kwargs, path + (name,), name)


def _class_hint(kind: str, name: str) -> str:
    wanted = name.replace("_", "").lower()
    for candidate in _namespaces()[kind]:
        if isinstance(_namespaces()[kind][candidate], type) and candidate.lower() == wanted:
            return candidate
    return "its CamelCase class name"


def make_optimizer(spec: Any, path: KeyPath) -> Any:
    """A new optimizer, e.g. ``adam`` or ``{AdamW: {learning_rate: 0.001}}``."""
    return _from_get("optimizer", keras.optimizers.get, spec, path)


def make_loss(spec: Any, path: KeyPath) -> Any:
    """A loss function or ``keras.losses.Loss`` instance."""
    return _from_get("loss", keras.losses.get, spec, path)


def make_metric(spec: Any, path: KeyPath) -> Any:
    """A metric for ``compile``. Bare names stay strings so Keras picks, e.g., which accuracy."""
    if isinstance(spec, str):
        if spec in {"accuracy", "acc", "crossentropy", "ce"}:
            return spec
        _from_get("metric", keras.metrics.get, spec, path)
        return spec
    return _from_get("metric", keras.metrics.get, spec, path)
