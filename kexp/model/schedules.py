"""Learning-rate schedules in YAML, for any optimizer, with lengths in steps or epochs.

Any ``keras.optimizers.schedules`` class (or a registered custom ``LearningRateSchedule``) is
written where the optimizer's ``learning_rate`` goes:

    compile:
      optimizer:
        AdamW:
          learning_rate:
            CosineDecay: {initial_learning_rate: 0.0, warmup_target: 0.003,
                          warmup_epochs: 2, decay_epochs: 30}

Keras schedules count optimizer steps. A config may give any ``<x>_steps`` argument of the
schedule's constructor as ``<x>_epochs`` instead (``decay_epochs``, ``warmup_epochs``,
``first_decay_epochs``), and ``PiecewiseConstantDecay``'s ``boundaries`` as
``boundary_epochs``; kexp converts them with the run's steps per epoch, so the saved model
holds a plain Keras schedule in steps.

Steps per epoch are known only once the data is read, after the model is compiled. Until then
such a schedule is a :class:`PendingSchedule`, which fails loudly if anything tries to train
with it; :func:`resolve_pending` recompiles with the real schedule.
"""

from __future__ import annotations

import inspect
import math
import weakref
from typing import Any

from kexp.config.schema import ExperimentConfig, spec_parts
from kexp.errors import ConfigError, ConfigIssue, KeyPath, nearest
from kexp.resolve import _construct, _is_number, accepted_kwargs, check_kwargs, lookup
from kexp.resolve import make_optimizer as _make_optimizer
from kexp.tf import keras

EPOCHS = "_epochs"

#: Step-valued list arguments and the key that gives them in epochs.
_LIST_ARGS = {"boundary_epochs": "boundaries"}

#: Schedule arguments that are learning rates (never negative).
_RATES = ("initial_learning_rate", "warmup_target", "end_learning_rate", "values")

#: Callbacks that set ``optimizer.learning_rate``, which a schedule computes instead.
_LR_SETTERS = ("ReduceLROnPlateau", "LearningRateScheduler")

#: Optimizers compiled with a :class:`PendingSchedule` (no private Keras attribute needed).
_PENDING: "weakref.WeakSet[Any]" = weakref.WeakSet()


class PendingSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule given in epochs, before the steps per epoch are known. Never trains."""

    def __init__(self, spec: Any):
        self.spec = spec

    def __call__(self, step: Any) -> Any:
        raise RuntimeError(
            "kexp bug: training started before the learning-rate schedule given in epochs "
            "was converted to steps (kexp.model.schedules.resolve_pending was not called)"
        )

    def get_config(self) -> dict[str, Any]:
        return {"spec": self.spec}


def is_schedule(value: Any) -> bool:
    """``{ScheduleName: {kwargs}}`` where a number would be."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value)), str)


def uses_epochs(spec: Any) -> bool:
    """Whether a schedule spec gives some length in epochs."""
    _, kwargs = spec_parts(spec)
    return any(key.endswith(EPOCHS) for key in kwargs)


def _real(value: Any) -> bool:
    """A number (True and False are ints to Python, never to a config)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _steps(value: Any, steps_per_epoch: int, path: KeyPath) -> int:
    if not _real(value) or value <= 0:
        raise ConfigError.single(
            path, "must be a positive number of epochs", value=value, has_value=True
        )
    return max(1, round(value * steps_per_epoch))


def _increasing(values: list[Any], where: KeyPath, unit: str) -> list[ConfigIssue]:
    """Boundaries must rise strictly: Keras takes them as they come and would switch rates
    in an order nobody meant (or never reach a value), silently."""
    numbers = [v for v in values if _real(v)]
    if len(numbers) == len(values) and all(a < b for a, b in zip(numbers, numbers[1:])):
        return []
    if len(numbers) != len(values):
        return [ConfigIssue(where, f"must be a list of numbers of {unit}", value=values,
                            has_value=True)]
    return [ConfigIssue(where, f"boundaries must increase, each after the one before (in "
                               f"{unit})", value=values, has_value=True)]


def epoch_forms(accepted: set[str]) -> set[str]:
    """The ``<x>_epochs`` spellings a config may use for a schedule taking ``accepted``."""
    forms = {key[: -len("_steps")] + EPOCHS for key in accepted if key.endswith("_steps")}
    forms |= {epochs for epochs, steps in _LIST_ARGS.items() if steps in accepted}
    return forms


def in_steps(
    cls: type, kwargs: dict[str, Any], steps_per_epoch: int, path: KeyPath,
    exact: bool = True,
) -> dict[str, Any]:
    """``kwargs`` with every ``<x>_epochs`` replaced by ``<x>_steps`` (or ``boundaries``).

    ``exact`` False: ``steps_per_epoch`` is a stand-in (the data is not read yet), so what
    only the real number can tell (two boundaries on the same step) is left for later.
    """
    accepted = accepted_kwargs(cls)
    names = None if accepted is None else accepted | epoch_forms(accepted)
    out: dict[str, Any] = {}
    issues: list[ConfigIssue] = []
    for key, value in kwargs.items():
        where = path + (key,)
        if not key.endswith(EPOCHS):
            if key in _LIST_ARGS.values() and isinstance(value, list):
                issues.extend(_increasing(value, where, "steps"))
            out[key] = value
            continue
        target = _LIST_ARGS.get(key, key[: -len(EPOCHS)] + "_steps")
        if accepted is not None and target not in accepted:
            issues.append(ConfigIssue(where, f"{cls.__name__} takes no '{target}' that "
                                             f"'{key}' could give in epochs",
                                      suggestion=nearest(key, sorted(names - {key}))))
        elif target in kwargs:
            issues.append(ConfigIssue(where, f"give either '{key}' or '{target}', not both"))
        elif target in _LIST_ARGS.values():
            if not isinstance(value, list):
                issues.append(
                    ConfigIssue(where, "must be a list of epochs", value=value, has_value=True)
                )
                continue
            problems = _increasing(value, where, "epochs")
            if problems:
                issues.extend(problems)
                continue
            try:
                out[target] = [
                    _steps(v, steps_per_epoch, where + (i,)) for i, v in enumerate(value)
                ]
            except ConfigError as exc:
                issues.extend(exc.issues)
                continue
            if exact and len(set(out[target])) != len(out[target]):
                issues.append(ConfigIssue(
                    where, f"with {steps_per_epoch} steps per epoch these boundaries fall on "
                    f"the same step ({out[target]}); space them further apart",
                    value=value, has_value=True,
                ))
        else:
            try:
                out[target] = _steps(value, steps_per_epoch, where)
            except ConfigError as exc:
                issues.extend(exc.issues)
    if issues:
        raise ConfigError(issues)
    return out


def _check_names(cls: type, kwargs: dict[str, Any], path: KeyPath, name: str) -> None:
    """Unknown arguments, with suggestions that include the ``<x>_epochs`` forms:
    ``decay_epoch`` is a typo of ``decay_epochs``, not of Keras' ``decay_steps``."""
    accepted = accepted_kwargs(cls)
    if accepted is None:
        return
    names = sorted(accepted | epoch_forms(accepted))
    issues = [
        ConfigIssue(path + (key,), f"{name} takes no argument '{key}'",
                    suggestion=nearest(key, names))
        for key in kwargs
        if key not in accepted and not key.endswith(EPOCHS)  # those: in_steps says why
    ]
    if issues:
        raise ConfigError(issues)


def _check_values(cls: type, kwargs: dict[str, Any], path: KeyPath, name: str) -> None:
    """The values of a Keras schedule's arguments: numbers (lists of them for ``boundaries``
    and ``values``), true/false where Keras' default is one, text for ``name``.

    Keras converts them to tensors only when the schedule is first called, in the first
    training step: a schedule given where a rate goes, a quoted number or a list would
    otherwise pass every check and fail after the run directory exists. A negative or
    infinite rate is refused too: it trains (gradient ascent) or diverges, never usefully.
    Custom schedules (plugins) decide for themselves.
    """
    if not cls.__module__.startswith("keras."):
        return
    defaults = {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()}
    issues = []
    for key, value in kwargs.items():
        where = path + (key,)
        default = defaults.get(key, inspect.Parameter.empty)
        if key == "name" or key.endswith(EPOCHS) or (value is None and default is None):
            continue  # names are Keras' to check; epochs: in_steps
        if isinstance(default, bool):
            if not isinstance(value, bool):
                issues.append(ConfigIssue(where, f"{name}'s '{key}' is a switch: give true or "
                                          "false", value=value, has_value=True))
            continue
        if key in _LIST_ARGS.values() or key == "values":
            if not (isinstance(value, list) and all(_real(v) for v in value)):
                issues.append(ConfigIssue(where, f"{name}'s '{key}' must be a list of numbers",
                                          value=value, has_value=True))
            elif key in _RATES and not all(math.isfinite(v) and v >= 0 for v in value):
                issues.append(ConfigIssue(where, f"{name}'s '{key}' are learning rates: each "
                                          "must be a finite number, 0 or more", value=value,
                                          has_value=True))
            continue
        if _real(value) and not math.isfinite(value):
            issues.append(ConfigIssue(where, f"{name}'s '{key}' must be a finite number",
                                      value=value, has_value=True))
        elif _real(value):
            if value < 0 and key in _RATES:
                issues.append(ConfigIssue(where, f"{name}'s '{key}' is a learning rate: it must "
                                          "not be negative", value=value, has_value=True))
        elif is_schedule(value):
            issues.append(ConfigIssue(where, f"{name}'s '{key}' must be a number: a schedule "
                                      "cannot take another schedule", value=value,
                                      has_value=True))
        else:
            quoted = isinstance(value, str) and _is_number(value)
            issues.append(ConfigIssue(where, f"{name}'s '{key}' must be a number" +
                                      (f": '{value}' is quoted, so it is text; write it "
                                       "without quotes" if quoted else ""),
                                      value=value, has_value=True))
    warmup = [k for k, v in kwargs.items()
              if k.startswith("warmup_") and k != "warmup_target" and v]
    if warmup and "warmup_target" in defaults and kwargs.get("warmup_target") is None:
        key = warmup[0]
        issues.append(ConfigIssue(
            path + (key,), f"{name} warms up only towards a warmup_target (the rate at the "
            f"end of the warmup); without one Keras ignores '{key}'", value=kwargs[key],
            has_value=True))
    if issues:
        raise ConfigError(issues)


def make_schedule(spec: Any, path: KeyPath, steps_per_epoch: int | None = None) -> Any:
    """A ``LearningRateSchedule`` from ``{Name: kwargs}``; lengths in epochs converted.

    Without ``steps_per_epoch`` a schedule that needs it is checked (built with one step per
    epoch) and a :class:`PendingSchedule` returned in its place.
    """
    name, kwargs = spec_parts(spec)
    cls = lookup("schedule", name, path)
    base = keras.optimizers.schedules.LearningRateSchedule
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError.single(path, f"'{name}' is not a learning-rate schedule class")
    issues: list[ConfigIssue] = []
    for check in (_check_names, _check_values):
        try:
            check(cls, kwargs, path + (name,), name)
        except ConfigError as exc:
            issues.extend(exc.issues)
    try:
        converted = in_steps(cls, kwargs, steps_per_epoch or 1, path + (name,),
                             exact=steps_per_epoch is not None)
    except ConfigError as exc:
        issues.extend(exc.issues)
    if issues:  # every mistake of the schedule at once
        raise ConfigError(issues)
    check_kwargs(cls, converted, path + (name,), name)
    schedule = _construct(cls, converted, path + (name,), name)
    if steps_per_epoch is None and uses_epochs(spec):
        return PendingSchedule(spec)
    return schedule


def make_optimizer(
    spec: Any,
    path: KeyPath,
    steps_per_epoch: int | None = None,
    learning_rate: float | None = None,
) -> Any:
    """An optimizer whose ``learning_rate`` may be a schedule spec (or is overridden)."""
    name, kwargs = spec_parts(spec)
    if learning_rate is not None:
        kwargs["learning_rate"] = learning_rate
    _check_optimizer_values(name, kwargs, path + (name,))
    rate = kwargs.get("learning_rate")
    if isinstance(rate, int) and not isinstance(rate, bool):
        kwargs["learning_rate"] = float(rate)  # YAML's 1 is an int; Keras wants a float
        spec = {name: kwargs}
    pending = False
    if is_schedule(kwargs.get("learning_rate")):
        where = path + (name, "learning_rate")
        schedule = make_schedule(kwargs["learning_rate"], where, steps_per_epoch)
        kwargs["learning_rate"] = schedule
        pending = isinstance(schedule, PendingSchedule)
        spec = {name: kwargs}
    elif learning_rate is not None:
        spec = {name: kwargs}
    optimizer = _make_optimizer(spec, path)
    if pending:
        _PENDING.add(optimizer)
    return optimizer


def _check_optimizer_values(name: str, kwargs: dict[str, Any], path: KeyPath) -> None:
    """Only ``learning_rate`` takes a schedule (``{Name: kwargs}``), and it must not be
    negative nor infinite (a negative rate climbs the loss; an infinite one is NaN at once).

    Keras keeps any other mapping it is given (``clipnorm``, ``beta_1``) and fails in the
    first training step, after the run directory exists. A plugin's optimizer may take a
    mapping (per-layer multipliers, say): only Keras' own are held to this.
    """
    try:
        cls = lookup("optimizer", name, path[:-1])
    except ConfigError:
        cls = None  # an unknown name: reported where the optimizer is made
    # (a name the registry does not know is an alias only Keras' get() knows: Keras' own)
    builtin = cls is None or getattr(cls, "__module__", "").startswith("keras.")
    issues = []
    for key, value in kwargs.items():
        if key == "learning_rate":
            if _real(value) and (value < 0 or not math.isfinite(value)):
                issues.append(ConfigIssue(
                    path + (key,), "the learning rate must be a finite number, 0 or more",
                    value=value, has_value=True))
        elif isinstance(value, dict) and builtin:
            issues.append(ConfigIssue(
                path + (key,), f"{name}'s '{key}' takes a value, not a mapping (of the "
                "optimizer's arguments only learning_rate takes a schedule)",
                value=value, has_value=True))
    if issues:
        raise ConfigError(issues)


def is_pending(model: Any) -> bool:
    """Whether ``model`` was compiled before its schedule's steps per epoch were known.

    Under float16 Keras' ``compile`` wraps the optimizer in a ``LossScaleOptimizer``; the
    schedule is the inner one's (was: missed, and training met the placeholder schedule)."""
    optimizer = getattr(model, "optimizer", None)
    return optimizer in _PENDING or getattr(optimizer, "inner_optimizer", None) in _PENDING


def resolve_pending(model: Any, config: ExperimentConfig, steps_per_epoch: int) -> None:
    """Recompile with the schedule in steps now that ``steps_per_epoch`` is known.

    Nothing has trained yet, so a recompile loses nothing; it is Keras' own way to give a
    model a new optimizer (in the model's distribution strategy scope, where it was built).
    """
    if not is_pending(model):
        return
    from kexp.model.build import compile_model

    with model.distribute_strategy.scope():
        compile_model(model, config, steps_per_epoch=steps_per_epoch)


def check_schedule_steps(model: Any, config: ExperimentConfig, steps_per_epoch: int) -> None:
    """Convert a pending schedule's epochs with the real ``steps_per_epoch`` and discard it:
    what only that number tells (two boundaries on the same step) is found before the run
    directory exists rather than when training starts (:func:`resolve_pending`)."""
    if not is_pending(model):
        return
    name, kwargs = spec_parts(config.compile.optimizer)
    make_schedule(kwargs["learning_rate"], ("compile", "optimizer", name, "learning_rate"),
                  steps_per_epoch)


def _optimizer_has_schedule(config: ExperimentConfig, model: Any) -> bool:
    _, kwargs = spec_parts(config.compile.optimizer)
    if is_schedule(kwargs.get("learning_rate")):
        return True
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return False
    return isinstance(optimizer.get_config().get("learning_rate"), dict)


def check_callbacks(config: ExperimentConfig, model: Any) -> None:
    """A callback that sets the learning rate cannot work with a schedule: say so now.

    ``ReduceLROnPlateau`` (and ``LearningRateScheduler``) assign ``optimizer.learning_rate``;
    Keras refuses that assignment when the rate comes from a schedule, which would otherwise
    fail in the middle of training.
    """
    if not config.callbacks or not _optimizer_has_schedule(config, model):
        return
    setters = tuple(getattr(keras.callbacks, n) for n in _LR_SETTERS)
    issues = []
    for index, spec in enumerate(config.callbacks):
        name, _ = spec_parts(spec)
        try:
            cls = lookup("callback", name, ("callbacks", index))
        except ConfigError:
            continue  # reported where callbacks are built
        if isinstance(cls, type) and issubclass(cls, setters):
            issues.append(ConfigIssue(
                ("callbacks", index, name),
                f"{name} changes the optimizer's learning rate, but compile.optimizer takes it "
                "from a schedule, which Keras does not let a callback change; remove the "
                f"callback or give a constant learning_rate",
            ))
    if issues:
        raise ConfigError(issues)
