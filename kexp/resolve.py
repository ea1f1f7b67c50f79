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
import math
from dataclasses import dataclass
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
    "schedule": "keras.optimizers.schedules",
    "initializer": "keras.initializers",
    "regularizer": "keras.regularizers",
    "constraint": "keras.constraints",
    "activation": "keras.activations",
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
        "schedule": _public_namespace(
            keras.optimizers.schedules, keras.optimizers.schedules.LearningRateSchedule
        ),
        "initializer": _public_namespace(keras.initializers),
        "regularizer": _public_namespace(keras.regularizers),
        "constraint": _public_namespace(keras.constraints),
        "activation": _public_namespace(keras.activations),
    }


def _kind_bases() -> dict[str, tuple[type, ...]]:
    """What a custom object must subclass to be a ``kind`` (functions fit the function kinds)."""
    return {
        "layer": (keras.layers.Layer,),
        "callback": (keras.callbacks.Callback,),
        "optimizer": (keras.optimizers.Optimizer,),
        "schedule": (keras.optimizers.schedules.LearningRateSchedule,),
        "loss": (keras.losses.Loss,),
        "metric": (keras.metrics.Metric,),
        "initializer": (keras.initializers.Initializer,),
        "regularizer": (keras.regularizers.Regularizer,),
        "constraint": (keras.constraints.Constraint,),
        "activation": (keras.layers.Layer,),
    }


#: Metric names ``compile`` resolves itself (to the accuracy or crossentropy that fits the loss
#: and labels); no ``keras.metrics.get`` knows them, so they are listed for suggestions too.
_COMPILE_METRIC_ALIASES = frozenset({"accuracy", "acc", "crossentropy", "ce"})

#: Kinds that may also be a plain function (``def focal_loss(y_true, y_pred)``).
_FUNCTION_KINDS = {"loss", "metric", "initializer", "regularizer", "constraint", "activation"}


def _fits(kind: str, obj: Any) -> bool:
    if inspect.isclass(obj):
        return issubclass(obj, _kind_bases()[kind])
    return kind in _FUNCTION_KINDS and callable(obj)


def custom_objects(kind: str) -> dict[str, Any]:
    """Registered custom objects (and objects of imported plugins) that can be a ``kind``."""
    from kexp.plugins import plugin_objects

    found = {**plugin_objects(), **keras.saving.get_custom_objects()}
    return {name: obj for name, obj in found.items() if _fits(kind, obj)}


def _by_short_name(kind: str, name: str, path: KeyPath) -> Any:
    """A custom object by its short name (``FocalLoss`` for ``my_lab>FocalLoss``), or None.

    Keras registers objects as ``package>Name`` and only finds them under that full name;
    a config may use the short name as long as only one registered object has it.
    """
    matches: dict[int, tuple[list[str], Any]] = {}
    for full, obj in custom_objects(kind).items():
        if full == name or full.split(">")[-1] == name:
            matches.setdefault(id(obj), ([], obj))[0].append(full)
    if len(matches) > 1:
        names = sorted(max(names, key=len) for names, _ in matches.values())
        raise ConfigError.single(
            path,
            f"'{name}' is ambiguous: several registered {kind}s have this name ("
            + ", ".join(names) + "); write the full registered name",
        )
    return next(iter(matches.values()))[1] if matches else None


def known_names(kind: str) -> list[str]:
    """Names a config may use for ``kind`` (built-ins and registered custom objects)."""
    custom = custom_objects(kind)
    names = set(_namespaces()[kind]) | {k.split(">")[-1] for k in custom} | set(custom)
    return sorted(names | _COMPILE_METRIC_ALIASES if kind == "metric" else names)


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


def not_switches(cls: type) -> dict[str, Any]:
    """Arguments of ``cls(...)`` that a boolean is never right for: name -> default.

    Python takes ``True`` as the integer 1, and Keras does not check, so ``units: true``
    would quietly build a Dense layer of one unit. An argument whose default is a number
    (``patience=0``, ``rate=0.5``) is a count or a quantity, never a switch; nor is a
    required argument of a Keras class (``Dense(units)``, ``Dropout(rate)``, ...: sizes,
    rates, layers and names, none a flag). A plugin's required arguments are left to it.
    The default is :data:`inspect.Parameter.empty` for a required argument.
    """
    found: dict[str, Any] = {}
    seen: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            break
        for p in params:
            if p.name in seen or p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            seen.add(p.name)  # the subclass's signature wins
            numeric = type(p.default) in (int, float)
            if numeric or (p.default is p.empty and klass.__module__.startswith("keras.")):
                found[p.name] = p.default
    return found


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_kwargs(cls: type, kwargs: dict[str, Any], path: KeyPath, what: str) -> None:
    """Raise ConfigError listing every keyword argument ``cls`` does not take, and every
    true/false given where no switch goes (:func:`not_switches`)."""
    accepted = accepted_kwargs(cls)
    issues = [
        ConfigIssue(
            path + (key,),
            f"{what} takes no argument '{key}'",
            suggestion=nearest(key, accepted),
        )
        for key in kwargs
        if accepted is not None and key not in accepted
    ]
    numbers = not_switches(cls)
    for key, value in kwargs.items():
        if isinstance(value, float) and math.isnan(value):
            issues.append(ConfigIssue(
                path + (key,), f"{what}'s '{key}' is NaN (.nan), which no argument takes",
                value=value, has_value=True))
        elif (isinstance(value, str) and _is_number(value) and key in numbers
                and isinstance(numbers[key], (int, float))
                and not isinstance(numbers[key], bool)):
            issues.append(ConfigIssue(
                path + (key,), f"{what}'s '{key}' is a number (default {numbers[key]!r}), but "
                f"'{value}' is quoted, so it is text: write it without quotes",
                value=value, has_value=True))
        elif (isinstance(value, dict) and key in numbers
                and type(numbers[key]) in (int, float)):
            issues.append(ConfigIssue(
                path + (key,), f"{what}'s '{key}' is a number (default {numbers[key]!r}): a "
                "mapping does not fit it", value=value, has_value=True))
        if isinstance(value, bool) and key in numbers:
            default = numbers[key]
            kind = (f"a number (default {default!r})" if default is not inspect.Parameter.empty
                    else "a required argument, not a switch")
            issues.append(ConfigIssue(
                path + (key,), f"{what}'s '{key}' is {kind}: true/false does not fit it",
                value=value, has_value=True,
            ))
    if issues:
        raise ConfigError(issues)


def lookup(kind: str, name: str, path: KeyPath) -> Any:
    """The class or function registered under ``name`` for ``kind``; ConfigError if none."""
    found = keras.saving.get_registered_object(name, module_objects=_namespaces()[kind])
    if found is None:
        found = _by_short_name(kind, name, path)
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
        elif _argument_kind(key) is not None:
            out[key] = make_argument(_argument_kind(key), value, path + (key,))
        elif _is_object_spec(value):
            ((name, inner),) = value.items()
            out[key] = {
                "class_name": _registered_name(name, path + (key,)),
                "config": dict(inner or {}),
            }
        else:
            out[key] = value
    return out


#: Layer arguments that take a Keras object of some kind, by how their name ends
#: (``activation``, ``recurrent_activation``, ``kernel_initializer``, ``bias_constraint``...).
_ARGUMENT_SUFFIXES = ("activation", "initializer", "regularizer", "constraint")


def _argument_kind(key: str) -> str | None:
    return next((kind for kind in _ARGUMENT_SUFFIXES if key.endswith(kind)), None)


def _getter(kind: str) -> Callable[[Any], Any]:
    return getattr(keras, f"{kind}s").get


def _keras_knows(get: Callable[[Any], Any], name: str) -> bool:
    """Whether Keras' own ``get()`` resolves ``name`` (built-ins and their aliases)."""
    try:
        get(name)
    except (ValueError, TypeError):
        return False
    return True


def _registered_name(name: str, path: KeyPath) -> str:
    """The name Keras' deserialization finds: a custom object's full ``package>Name``."""
    if any(name in names for names in _namespaces().values()):
        return name
    for kind in _ARGUMENT_SUFFIXES + ("layer", "loss", "metric", "schedule"):
        found = _by_short_name(kind, name, path)
        if found is not None:
            return keras.saving.get_registered_name(found)
    return name


def make_argument(kind: str, value: Any, path: KeyPath) -> Any:
    """A layer argument naming an activation, initializer, regularizer or constraint.

    ``relu``, ``he_normal``, ``l2``: Keras' own names stay strings. A custom object is found
    by name (also its short name) and passed as the object. ``{Name: kwargs}`` is built from
    its class, kwargs checked; for an activation, ``Name`` may also be a layer
    (``{LeakyReLU: {negative_slope: 0.2}}``), since a layer is a callable Keras saves.
    """
    if isinstance(value, str):
        if _keras_knows(_getter(kind), value):
            return value
        found = lookup(kind, value, path)
        return _construct(found, {}, path, value) if isinstance(found, type) else found
    if not (isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value)), str)):
        return value  # None, a number, or Keras' own serialized form: Keras decides
    name, kwargs = spec_parts(value)
    found = keras.saving.get_registered_object(name, module_objects=_namespaces()[kind])
    if found is None:
        found = _by_short_name(kind, name, path)
    if found is None and kind == "activation" and name[:1].isupper():
        return make_layer(value, path)
    if found is None:
        lookup(kind, name, path)  # the "unknown ..., did you mean" error
    if not isinstance(found, type):
        if kwargs:
            hint = _class_hint("layer" if kind == "activation" else kind, name)
            raise ConfigError.single(
                path + (name,),
                f"'{name}' is a function and takes no arguments; use a class instead "
                f"(e.g. {hint}: {{...}})",
            )
        return found
    check_kwargs(found, kwargs, path + (name,), name)
    return _construct(found, kwargs, path + (name,), name)


def make_layer(spec: Any, path: KeyPath) -> Any:
    """A new ``keras.layers.Layer`` from ``Name`` or ``{Name: kwargs}``."""
    name, kwargs = spec_parts(spec)
    cls = lookup("layer", name, path)
    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
        raise ConfigError.single(path, f"'{name}' is not a Keras layer class")
    check_kwargs(cls, kwargs, path + (name,), name)
    if issubclass(cls, keras.layers.Lambda):  # its function is code: see kexp.safety
        from kexp.safety import lambda_arguments

        kwargs = lambda_arguments(kwargs, path + (name,))
    arguments = keras_arguments(kwargs, path + (name,))
    return _construct(cls, arguments, path + (name,), name)


def make_callback(spec: Any, path: KeyPath, defaults: dict[str, Any] | None = None) -> Any:
    """A ``keras.callbacks.Callback``; ``defaults`` fill arguments the user did not give.

    An argument Keras calls (``LearningRateScheduler``'s ``schedule``, ``LambdaCallback``'s
    hooks: :data:`FUNCTION_ARGS`) names a function a plugin defines, and gets that function.
    """
    name, kwargs = spec_parts(spec)
    cls = lookup("callback", name, path)
    check_kwargs(cls, kwargs, path + (name,), name)
    merged = {**(defaults or {}), **kwargs}
    merged = _function_arguments(cls, merged, path + (name,), name)
    return _construct(cls, merged, path + (name,), name)


@dataclass(frozen=True)
class FunctionArg:
    """A callback argument that Keras calls: how it calls it (shown to the user, and tried
    against the function's signature; a schedule may take one argument or two)."""

    shown: str
    calls: tuple[tuple[tuple[Any, ...], dict[str, Any]], ...]


_HOOK_EPOCH = ((0, {}), {})
_HOOK_BATCH = ((0,), {"logs": {}})
_HOOK_TRAIN = (({},), {})

#: The callback arguments Keras calls, by class (subclasses included). A string in YAML can
#: only be a name there, and Keras would call the string mid-training (``'str' object is not
#: callable``). Listed by hand: neither Keras' signatures nor their defaults say which
#: arguments are functions. (``keras.callbacks`` 3.x; a plugin's own callback takes its
#: functions as it likes.)
FUNCTION_ARGS: dict[type, dict[str, FunctionArg]] = {
    keras.callbacks.LearningRateScheduler: {
        "schedule": FunctionArg("schedule(epoch, learning_rate)", (((0, 0.01), {}), ((0,), {}))),
    },
    keras.callbacks.LambdaCallback: {
        "on_epoch_begin": FunctionArg("on_epoch_begin(epoch, logs)", (_HOOK_EPOCH,)),
        "on_epoch_end": FunctionArg("on_epoch_end(epoch, logs)", (_HOOK_EPOCH,)),
        "on_train_begin": FunctionArg("on_train_begin(logs)", (_HOOK_TRAIN,)),
        "on_train_end": FunctionArg("on_train_end(logs)", (_HOOK_TRAIN,)),
        "on_train_batch_begin": FunctionArg("on_train_batch_begin(batch, logs=...)",
                                            (_HOOK_BATCH,)),
        "on_train_batch_end": FunctionArg("on_train_batch_end(batch, logs=...)",
                                          (_HOOK_BATCH,)),
    },
}


def function_args(cls: type) -> dict[str, FunctionArg]:
    """The arguments of callback class ``cls`` that Keras calls (see :data:`FUNCTION_ARGS`)."""
    found: dict[str, FunctionArg] = {}
    for base, args in FUNCTION_ARGS.items():
        if issubclass(cls, base):
            found.update(args)
    return found


def plugin_functions() -> dict[str, Any]:
    """Functions a config may name: those of the imported plugins and Keras' registered
    custom objects, by full (``module>name``) name."""
    from kexp.plugins import plugin_objects

    found = {**plugin_objects(), **keras.saving.get_custom_objects()}
    return {name: obj for name, obj in found.items()
            if callable(obj) and not inspect.isclass(obj)}


def lookup_function(name: str, path: KeyPath, what: str) -> Any:
    """The plugin function called ``name`` (full or short name); ConfigError if none.

    ``what`` says what the function is for (``LearningRateScheduler calls 'schedule'``).
    Only plugins bring code into a run (:mod:`kexp.safety`), so only their functions can be
    named: not Python's built-ins, not source code.
    """
    functions = plugin_functions()
    matches: dict[int, tuple[list[str], Any]] = {}
    for full, obj in functions.items():
        if full == name or full.split(">")[-1] == name:
            matches.setdefault(id(obj), ([], obj))[0].append(full)
    if len(matches) > 1:
        names = sorted(max(names, key=len) for names, _ in matches.values())
        raise ConfigError.single(
            path, f"'{name}' is ambiguous: several plugin functions have this name ("
            + ", ".join(names) + "); write the full name",
        )
    if matches:
        return next(iter(matches.values()))[1]
    short = {full.split(">")[-1] for full in functions} | set(functions)
    raise ConfigError.single(
        path,
        f"{what} as a function, and '{name}' is no function a plugin defines: write the "
        "function in a Python file, list the file under `plugins:`, and give its name here",
        suggestion=nearest(name, short),
    )


def _function_arguments(cls: type, kwargs: dict[str, Any], path: KeyPath,
                        name: str) -> dict[str, Any]:
    """``kwargs`` with each argument Keras calls resolved to the plugin function it names."""
    args = function_args(cls)
    if not args:
        return kwargs
    try:
        parameters = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        parameters = {}
    out = dict(kwargs)
    issues: list[ConfigIssue] = []
    for arg, call in args.items():
        parameter = parameters.get(arg)
        optional = parameter is not None and parameter.default is None
        where = path + (arg,)
        what = f"{name} calls '{arg}'"
        value = kwargs.get(arg)
        if value is None:
            if not optional:
                issues.append(ConfigIssue(
                    where if arg in kwargs else path,
                    f"{name} needs '{arg}': the name of a function a plugin defines, called "
                    f"as {call.shown}",
                ))
            continue
        if not isinstance(value, str):
            issues.append(ConfigIssue(
                where, f"{what} as {call.shown}: give the name of a function a plugin "
                "defines (a Python file listed under `plugins:`)",
                value=value, has_value=True,
            ))
            continue
        try:
            function = lookup_function(value, where, what)
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        if not _can_call(function, call):
            issues.append(ConfigIssue(
                where, f"{what} as {call.shown}, which plugin function '{value}' cannot take "
                f"(it is {getattr(function, '__name__', value)}{_signature(function)})",
            ))
            continue
        out[arg] = function
    if issues:
        raise ConfigError(issues)
    return out


def _can_call(function: Any, call: FunctionArg) -> bool:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return True  # a builtin or C function: Keras will find out
    for args, kwargs in call.calls:
        try:
            signature.bind(*args, **kwargs)
            return True
        except TypeError:
            continue
    return False


def _signature(function: Any) -> str:
    try:
        return str(inspect.signature(function))
    except (TypeError, ValueError):
        return "(...)"


def _from_get(kind: str, get: Callable[[Any], Any], spec: Any, path: KeyPath) -> Any:
    """Resolve with Keras' ``get()``: a bare name as Keras takes it, kwargs through its class."""
    name, kwargs = spec_parts(spec)
    if isinstance(spec, str):
        try:
            return get(name)
        except (ValueError, TypeError):
            # Keras' get() knows only built-ins; custom objects (also by short name) or the
            # "unknown ..., did you mean" error come from the registry.
            found = lookup(kind, name, path)
            return _construct(found, {}, path, name) if isinstance(found, type) else found
    cls = keras.saving.get_registered_object(name, module_objects=_namespaces()[kind])
    if cls is None:
        cls = _by_short_name(kind, name, path)
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
        if spec in _COMPILE_METRIC_ALIASES:
            return spec
        found = _from_get("metric", keras.metrics.get, spec, path)
        return spec if _keras_knows(keras.metrics.get, spec) else found  # custom: the object
    return _from_get("metric", keras.metrics.get, spec, path)
