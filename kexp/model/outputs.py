"""Losses, loss weights and metrics per output, matched to the outputs a config declares.

A multi-output model is compiled with one loss per output, keyed by output name:

    compile:
      loss: {digit: sparse_categorical_crossentropy, parity: binary_crossentropy}
      loss_weights: {digit: 1.0, parity: 0.3}
      metrics: {digit: [accuracy], parity: [accuracy, AUC]}

Whether a mapping is per output or one ``{LossClass: kwargs}`` is decided by the output
names (never by guessing from its shape), and a key that names no output is an error with
the nearest output name. A single loss or a metric list given to a multi-output model applies
to every output, each with its own metric objects (as Keras 2 did; Keras 3 refuses a flat
metric list). Everything here works from the config alone, so ``kexp validate`` checks it
even when the model itself does not build.
"""

from __future__ import annotations

from typing import Any, Callable

from kexp.config.schema import ExperimentConfig
from kexp.config.schema.functional import output_map
from kexp.errors import ConfigIssue, KeyPath, nearest

Make = Callable[[Any, KeyPath], Any]


def declared_outputs(config: ExperimentConfig) -> list[str] | None:
    """The output names of a functional model; None for a Sequential one (one output)."""
    functional = config.model.functional
    return list(output_map(functional.outputs)) if functional is not None else None


def _unknown(key: str, outputs: list[str], path: KeyPath) -> ConfigIssue:
    return ConfigIssue(path, f"the model has no output '{key}' (its outputs: "
                       f"{', '.join(outputs)})", suggestion=nearest(key, outputs))


def _per_output_style(spec: Any, outputs: list[str] | None) -> bool:
    """``{output: loss}`` rather than ``{LossClass: kwargs}``.

    Output names decide first; otherwise a value that is itself a loss (a name, or a
    ``{Class: kwargs}``) marks the mapping as per output, while keyword arguments mark a class.
    """
    if not isinstance(spec, dict):
        return False
    if outputs is not None and set(spec) <= set(outputs):
        return True
    if len(spec) > 1:
        return True
    (value,) = spec.values()
    return isinstance(value, str) or (
        isinstance(value, dict) and len(value) == 1 and str(next(iter(value)))[:1].isupper()
    )


def loss(spec: Any, outputs: list[str] | None, make: Make, issues: list[ConfigIssue]) -> Any:
    """``compile.loss`` as Keras takes it for these outputs."""
    path: KeyPath = ("compile", "loss")
    if not _per_output_style(spec, outputs):
        if outputs is None or len(outputs) == 1:
            return make(spec, path)
        return {o: make(spec, path) for o in outputs}  # the same loss for each output
    if outputs is None:
        issues.append(ConfigIssue(path, "a Sequential model has one output: give one loss"))
        return None
    bad = [k for k in spec if k not in outputs]
    issues.extend(_unknown(k, outputs, path + (k,)) for k in bad)
    missing = [o for o in outputs if o not in spec]
    if missing and not bad:
        issues.append(ConfigIssue(path, f"no loss for output(s) {', '.join(missing)}: a "
                                  "multi-output model needs one loss per output"))
    if bad or missing:
        return None
    if len(outputs) == 1:
        return make(spec[outputs[0]], path + (outputs[0],))
    return {o: make(spec[o], path + (o,)) for o in outputs}


def metrics(spec: Any, outputs: list[str] | None, make: Make, issues: list[ConfigIssue]) -> Any:
    """``compile.metrics``: a list (for every output) or ``{output: [metric, ...]}``."""
    path: KeyPath = ("compile", "metrics")
    if isinstance(spec, dict):
        if outputs is None:  # Sequential: Keras' own rules for its one output
            return {o: [make(m, path + (o, i)) for i, m in enumerate(ms)] for o, ms in spec.items()}
        bad = [k for k in spec if k not in outputs]
        issues.extend(_unknown(k, outputs, path + (k,)) for k in bad)
        if bad:
            return None
        if len(outputs) == 1:
            (ms,) = spec.values()
            return [make(m, path + (outputs[0], i)) for i, m in enumerate(ms)]
        return {o: [make(m, path + (o, i)) for i, m in enumerate(ms)] for o, ms in spec.items()}
    if outputs is None or len(outputs) == 1:
        return [make(m, path + (i,)) for i, m in enumerate(spec)]
    return {o: [make(m, path + (i,)) for i, m in enumerate(spec)] for o in outputs}


def loss_weights(spec: Any, outputs: list[str] | None, issues: list[ConfigIssue]) -> Any:
    """``compile.loss_weights``: a mapping by output (missing ones weigh 1) or a list in the
    order of ``outputs:``."""
    path: KeyPath = ("compile", "loss_weights")
    if spec is None:
        return spec
    if outputs is None:  # a Sequential model: one output, named by its last layer
        if isinstance(spec, dict) or len(spec) != 1:
            given = "a mapping" if isinstance(spec, dict) else f"{len(spec)} weights"
            issues.append(ConfigIssue(path, f"a Sequential model has one output, so one "
                                      f"weight, [w], but {given} given (a weight of one "
                                      "loss only scales it: leave it out)"))
            return None
        return spec
    if isinstance(spec, dict):
        bad = [k for k in spec if k not in outputs]
        issues.extend(_unknown(k, outputs, path + (k,)) for k in bad)
        if bad:
            return None
        weights = {o: float(spec.get(o, 1.0)) for o in outputs}
    else:
        if len(spec) != len(outputs):
            issues.append(ConfigIssue(path, f"{len(spec)} weight(s) for {len(outputs)} "
                                      f"output(s) ({', '.join(outputs)})"))
            return None
        weights = dict(zip(outputs, map(float, spec)))
    if len(outputs) == 1:
        return next(iter(weights.values()))
    return weights
