"""Training in stages: a backbone frozen for the first epochs, then fine-tuned.

This is the recipe of Keras' transfer-learning guide, done with Keras' own mechanisms:
``layer.trainable = False`` then ``compile`` and ``fit``; then ``layer.trainable = True``,
``compile`` again (a changed ``trainable`` only takes effect at compile time, and the
optimizer must track the newly trainable weights) and ``fit`` from ``initial_epoch``. The
two stages are one run: one history, epochs numbered on, and one training for the callbacks
(one ``on_train_begin``, one ``on_train_end``, their state carried on: see
:mod:`kexp.training.loop` and :class:`FineTuningStart`).

:func:`fit` is also where a learning-rate schedule given in epochs gets its real length
(:mod:`kexp.model.schedules`), because this is the first place the steps per epoch are known.
"""

from __future__ import annotations

import fnmatch
import weakref
from typing import Any

from kexp.config.schema import ExperimentConfig, FreezeSection
from kexp.errors import ConfigError, ConfigIssue
from kexp.model.schedules import is_pending, resolve_pending
from kexp.tf import keras

#: The layers :func:`apply_freeze` froze: stage 2 unfreezes these and only these (a layer the
#: config marks ``trainable: false`` stays frozen). Kept by layer, not by model, because the
#: model may be wrapped afterwards (preprocessing in front, float32 outputs).
_FROZEN: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _named_layers(model: Any) -> list[Any]:
    """The model's layers, without the InputLayer a Sequential built on ``Input`` shows."""
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _all_layers(model: Any) -> list[Any]:
    """Every layer, inside sub-models too (a backbone is often a model of its own)."""
    found = []
    for layer in _named_layers(model):
        found.append(layer)
        if hasattr(layer, "layers"):
            found.extend(_all_layers(layer))
    return found


def select_layers(model: Any, section: FreezeSection) -> list[Any]:
    """The layers ``freeze.layers`` names; a name or index that matches nothing is an error."""
    layers = _named_layers(model)
    chosen: list[Any] = []
    issues = []
    for index, selector in enumerate(section.layers):
        if isinstance(selector, int):
            matched = [layers[selector]] if -len(layers) <= selector < len(layers) else []
        else:
            matched = [l for l in _all_layers(model) if fnmatch.fnmatchcase(l.name, selector)]
        if not matched:
            names = ", ".join(layer.name for layer in layers)
            issues.append(ConfigIssue(
                ("freeze", "layers", index),
                f"matches no layer of the model (layers: {names}); give layer names (set "
                "`name:` on a layer), shell-style patterns or indices",
                value=selector, has_value=True,
            ))
        chosen.extend(layer for layer in matched if layer not in chosen)
    if issues:
        raise ConfigError(issues)
    return chosen


def check_freeze(config: ExperimentConfig) -> None:
    """Structural checks that need no model: stage 1 must leave epochs for stage 2."""
    section = config.freeze
    if section is None or section.epochs is None:
        return
    if section.epochs >= config.train.epochs:
        raise ConfigError.single(
            ("freeze", "epochs"),
            f"the layers would stay frozen for all {config.train.epochs} epochs "
            f"(train.epochs); give fewer, or omit freeze.epochs to keep them frozen",
        )


def apply_freeze(model: Any, config: ExperimentConfig) -> list[Any]:
    """Freeze the selected layers before the first compile; returns those it froze."""
    if config.freeze is None:
        return []
    check_freeze(config)
    frozen = [layer for layer in select_layers(model, config.freeze) if layer.trainable]
    for layer in frozen:
        layer.trainable = False
    if config.freeze.epochs is None and frozen and not model.trainable_weights:
        for layer in frozen:  # the model as it was: nothing of this run's choice is kept
            layer.trainable = True
        raise ConfigError.single(
            ("freeze", "layers"),
            "these layers hold every trainable weight of the model, and without "
            "freeze.epochs they stay frozen for the whole run: nothing would be trained. "
            "Leave some layers out, or give freeze.epochs to fine-tune them after",
        )
    _FROZEN.update(frozen)
    return frozen


def _steps_per_epoch(x: Any, fit_kwargs: dict[str, Any]) -> int | None:
    if fit_kwargs.get("steps_per_epoch"):
        return int(fit_kwargs["steps_per_epoch"])
    cardinality = getattr(x, "cardinality", None)
    if cardinality is None:
        return None
    count = int(cardinality())
    return count if count > 0 else None


def _recompile(model: Any, config: ExperimentConfig, steps: int | None, lr: float | None) -> None:
    from kexp.model.build import compile_model

    with model.distribute_strategy.scope():
        compile_model(model, config, steps_per_epoch=steps, learning_rate=lr)


def fit(model: Any, config: ExperimentConfig, x: Any, epoch_steps: int | None = None,
        **fit_kwargs: Any) -> Any:
    """``model.fit(x, **fit_kwargs)`` in the stage its ``initial_epoch`` is in, entering that
    stage first (for the fine-tuning stage: unfreeze and recompile).

    One call trains within one stage; :func:`kexp.training.loop.fit_resumable` splits a run at
    ``freeze.epochs`` and passes every call the same callback list, so that the callbacks see
    one training. ``epoch_steps`` is the number of steps in a whole epoch, when
    ``fit_kwargs['steps_per_epoch']`` is not (the rest of an interrupted epoch); schedules
    given in epochs are converted with it.
    """
    steps = epoch_steps or _steps_per_epoch(x, fit_kwargs)
    if is_pending(model):
        if steps is None:
            raise ConfigError.single(
                ("compile", "optimizer"),
                "the learning-rate schedule is given in epochs, but the number of steps per "
                "epoch of this data is unknown; set train.steps_per_epoch",
            )
        resolve_pending(model, config, steps)
    section = config.freeze
    epochs = fit_kwargs.get("epochs", 1)
    start = fit_kwargs.get("initial_epoch", 0)
    if section is None or section.epochs is None or section.epochs >= epochs:
        return model.fit(x, **fit_kwargs)
    if start < section.epochs:  # a programming error, not the user's
        raise ValueError(
            f"epochs {start}..{epochs} cross the fine-tuning stage at {section.epochs}: fit "
            "one stage per call (kexp.training.loop.plan splits a run into stages)"
        )
    for layer in [layer for layer in _all_layers(model) if layer in _FROZEN]:
        layer.trainable = True
        _FROZEN.discard(layer)
    _recompile(model, config, steps, section.fine_tune_learning_rate)
    return model.fit(x, **fit_kwargs)


class FineTuningStart(keras.callbacks.Callback):
    """What a stop of the frozen stage leaves behind, settled as the fine-tuning stage begins.

    A callback that stops training in the frozen stage (EarlyStopping, its patience run out)
    ends that stage; fine-tuning still follows, as the next phase of the same training (the
    callbacks see one training: :mod:`kexp.training.loop`). At the first fine-tuning epoch
    each EarlyStopping that stopped does what it would have done at the end of a training,
    restore its best weights (``restore_best_weights``), so fine-tuning starts from the best
    frozen model; and counts its patience afresh. Its best value and weights carry on: the
    run's best epoch, in either stage, is the one restored at the end.

    Done at ``on_epoch_begin`` rather than between the two ``fit`` calls, so that a run
    resumed at the stage boundary (its callbacks' state restored at ``on_train_begin``)
    does the same. Put it first among the callbacks.
    """

    def __init__(self, epoch: int, callbacks: list[Any]):
        super().__init__()
        self.epoch = epoch
        self.callbacks = callbacks

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if epoch != self.epoch:
            return
        for callback in self.callbacks:
            if isinstance(callback, keras.callbacks.EarlyStopping) and callback.stopped_epoch > 0:
                if callback.restore_best_weights and callback.best_weights is not None:
                    callback.model.set_weights(callback.best_weights)
                callback.wait = 0
                callback.stopped_epoch = 0
