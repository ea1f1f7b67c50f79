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

import weakref
from typing import Any

from kexp.config.schema import ExperimentConfig, spec_parts
from kexp.errors import ConfigError, ConfigIssue, KeyPath, nearest
from kexp.resolve import _construct, accepted_kwargs, check_kwargs, lookup
from kexp.resolve import make_optimizer as _make_optimizer
from kexp.tf import keras

EPOCHS = "_epochs"

#: Step-valued list arguments and the key that gives them in epochs.
_LIST_ARGS = {"boundary_epochs": "boundaries"}

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


def _steps(value: Any, steps_per_epoch: int, path: KeyPath) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError.single(
            path, "must be a positive number of epochs", value=value, has_value=True
        )
    return max(1, round(value * steps_per_epoch))


def _increasing(values: list[Any], where: KeyPath, unit: str) -> list[ConfigIssue]:
    """Boundaries must rise strictly: Keras takes them as they come and would switch rates
    in an order nobody meant (or never reach a value), silently."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
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
    try:
        _check_names(cls, kwargs, path + (name,), name)
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


def is_pending(model: Any) -> bool:
    """Whether ``model`` was compiled before its schedule's steps per epoch were known."""
    return getattr(model, "optimizer", None) in _PENDING


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
