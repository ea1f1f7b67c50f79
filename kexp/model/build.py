"""Build and compile the model a config declares (inside the caller's strategy scope).

    with strategy.scope():
        model = build_model(config)
        compile_model(model, config)
"""

from __future__ import annotations

from typing import Any

from kexp.config.schema import ExperimentConfig
from kexp.errors import ConfigError, ConfigIssue
from kexp.model import outputs
from kexp.model.graph import depth_advice, model_scope, scope_depth
from kexp.model.outputs import declared_outputs
from kexp.model.sequential import build_sequential
from kexp.model.schedules import make_optimizer
from kexp.resolve import make_loss, make_metric


def build_model(config: ExperimentConfig) -> Any:
    """The uncompiled Keras model of ``config.model``.

    Keras walks a model's graph recursively (one Python call per layer of a path), so a
    model too deep for Python's recursion limit fails inside Keras with RecursionError:
    a config error here (kexp.model.graph finds the certain cases before building).
    """
    kind = "functional" if config.model.functional is not None else "sequential"
    try:
        if kind == "functional":
            return _build_functional(config)
        return build_sequential(config.model.sequential, config.name, ("model", "sequential"))
    except RecursionError as exc:
        if kind == "sequential":
            size = f"{len(config.model.sequential.layers):,} layers in one chain"
        else:
            spec = config.model.functional
            size = f"paths of up to {scope_depth(model_scope(spec, ()), spec.blocks, ()).longest:,} layers"
        raise ConfigError.single(
            ("model", kind),
            f"the model is too deep for Keras ({size}): {depth_advice()}",
        ) from exc


def _build_functional(config: ExperimentConfig) -> Any:
    """The graph, and data keyed by its input and output names (before any data is read)."""
    from kexp.model.functional import build_functional
    from kexp.model.graph import check_data_keys

    spec = config.model.functional
    issues = check_data_keys(config.data, list(spec.inputs), declared_outputs(config) or [])
    try:
        model = build_functional(spec, config.name, ("model", "functional"))
    except ConfigError as exc:
        raise ConfigError(exc.issues + issues, hint=exc.hint) from exc
    if issues:
        raise ConfigError(issues)
    return model


def compile_model(
    model: Any,
    config: ExperimentConfig,
    steps_per_epoch: int | None = None,
    learning_rate: float | None = None,
) -> None:
    """``model.compile`` with the optimizer, loss(es) and metrics of ``config.compile``.

    Every name is resolved before compiling so that all mistakes are reported together.
    ``steps_per_epoch`` converts schedule lengths given in epochs (kexp.model.schedules);
    ``learning_rate`` replaces the optimizer's (fine-tuning after a frozen stage).
    """
    execution = config.hardware.steps_per_execution
    if steps_per_epoch:  # whole executions per epoch (kexp.hardware.execution)
        from kexp.hardware.execution import steps_per_execution

        execution = steps_per_execution(execution, steps_per_epoch)
    model.compile(
        **resolve_compile(config, steps_per_epoch, learning_rate),
        jit_compile=config.hardware.jit_compile,
        steps_per_execution=execution,
    )


def resolve_compile(
    config: ExperimentConfig,
    steps_per_epoch: int | None = None,
    learning_rate: float | None = None,
) -> dict[str, Any]:
    """The optimizer, loss(es) and metrics of ``config.compile`` as Keras objects.

    Separate from :func:`compile_model` so ``kexp validate`` can check these names even
    when the model itself failed to build. Raises one ConfigError with every mistake.
    """
    section = config.compile
    issues: list[ConfigIssue] = []

    def attempt(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except ConfigError as exc:
            issues.extend(exc.issues)
            return None

    optimizer = attempt(
        make_optimizer, section.optimizer, ("compile", "optimizer"), steps_per_epoch, learning_rate
    )
    # per output, by the output names the config declares (kexp.model.outputs)
    names = outputs.declared_outputs(config)
    loss = outputs.loss(section.loss, names, lambda s, p: attempt(make_loss, s, p), issues)
    metrics = outputs.metrics(section.metrics, names, lambda s, p: attempt(make_metric, s, p), issues)
    loss_weights = outputs.loss_weights(section.loss_weights, names, issues)
    if issues:
        raise ConfigError(issues)
    return {"optimizer": optimizer, "loss": loss, "loss_weights": loss_weights, "metrics": metrics}
