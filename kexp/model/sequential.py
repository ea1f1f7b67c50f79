"""Build a ``keras.Sequential`` from the ``model.sequential`` section.

Every layer is resolved and checked first, so one build reports all the bad layers at once;
then the model is built on its declared input, which surfaces shape errors (a Conv2D on a
vector, a Dense after an unflattened image) with the index of the layer that failed.
"""

from __future__ import annotations

from typing import Any

from kexp.config.schema import SequentialModel, spec_parts
from kexp.errors import ConfigError, ConfigIssue, KeyPath
from kexp.resolve import make_layer
from kexp.tf import keras


def build_sequential(spec: SequentialModel, name: str, path: KeyPath, prefix: str = "") -> Any:
    """The Sequential model ``spec`` declares, built on its input shape.

    ``prefix`` starts every layer name (a sub-model node's ``<node>_``): a weight is named
    after its layer alone, and two sub-models may well name their layers alike. It is added
    before the layers are built, which is when their weights get their names.
    """
    issues: list[ConfigIssue] = []
    layers = []
    for index, layer_spec in enumerate(spec.layers):
        try:
            layer = make_layer(layer_spec, path + ("layers", index))
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        layer.name = prefix + layer.name
        layers.append(layer)
    if issues:
        raise ConfigError(issues)

    inputs = keras.Input(
        shape=tuple(spec.input.shape), dtype=spec.input.dtype, name=spec.input.name
    )
    tensor = inputs
    for index, layer in enumerate(layers):
        try:
            tensor = layer(tensor)
        except Exception as exc:  # Keras raises many types for shape problems
            layer_name, _ = spec_parts(spec.layers[index])
            raise ConfigError.single(
                path + ("layers", index),
                f"{layer_name} cannot take its input of shape {_shape(tensor)}: "
                f"{_first_line(exc)}",
            ) from exc
    # Sequential (rather than a Functional of the same layers) keeps what the user asked for
    # visible in summaries and in the saved architecture.
    model = keras.Sequential([inputs, *layers], name=spec.name or _model_name(name))
    return model


def _shape(tensor: Any) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in tensor.shape) + ")"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _model_name(name: str) -> str:
    """Keras model names must be valid scope names: letters, digits, underscores."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)
