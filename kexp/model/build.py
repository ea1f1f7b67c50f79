"""Build and compile the model a config declares (inside the caller's strategy scope).

    with strategy.scope():
        model = build_model(config)
        compile_model(model, config)
"""

from __future__ import annotations

from typing import Any

from kexp.config.schema import ExperimentConfig
from kexp.errors import ConfigError, ConfigIssue
from kexp.model.sequential import build_sequential
from kexp.resolve import make_loss, make_metric, make_optimizer


def build_model(config: ExperimentConfig) -> Any:
    """The uncompiled Keras model of ``config.model``."""
    return build_sequential(config.model.sequential, config.name, ("model", "sequential"))


def compile_model(model: Any, config: ExperimentConfig) -> None:
    """``model.compile`` with the optimizer, loss(es) and metrics of ``config.compile``.

    Every name is resolved before compiling so that all mistakes are reported together.
    """
    section = config.compile
    issues: list[ConfigIssue] = []

    def attempt(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except ConfigError as exc:
            issues.extend(exc.issues)
            return None

    optimizer = attempt(make_optimizer, section.optimizer, ("compile", "optimizer"))
    loss = _per_output(section.loss, ("compile", "loss"), lambda s, p: attempt(make_loss, s, p))
    metrics: Any
    if isinstance(section.metrics, dict):
        metrics = {
            out: [attempt(make_metric, m, ("compile", "metrics", out, i)) for i, m in enumerate(ms)]
            for out, ms in section.metrics.items()
        }
    else:
        metrics = [
            attempt(make_metric, m, ("compile", "metrics", i)) for i, m in enumerate(section.metrics)
        ]
    if issues:
        raise ConfigError(issues)
    model.compile(
        optimizer=optimizer,
        loss=loss,
        loss_weights=section.loss_weights,
        metrics=metrics,
        jit_compile=config.hardware.jit_compile,
        steps_per_execution=config.hardware.steps_per_execution,
    )


def _is_per_output(loss: Any) -> bool:
    """``{output: loss}`` rather than ``{LossClass: kwargs}``: values are not kwargs dicts."""
    if not isinstance(loss, dict):
        return False
    if len(loss) != 1:
        return True
    (value,) = loss.values()
    return not (value is None or isinstance(value, dict))


def _per_output(spec: Any, path: tuple, make: Any) -> Any:
    if _is_per_output(spec):
        return {out: make(s, path + (out,)) for out, s in spec.items()}
    return make(spec, path)
