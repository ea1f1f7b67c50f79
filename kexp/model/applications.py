"""``keras.applications`` architectures as one graph node (a backbone).

    - {name: backbone, application: {MobileNetV2: {include_top: false, pooling: avg}},
       inputs: image}

The architecture is built for the shape of the tensor it is applied to. Weights default to
``null`` (random initialisation): kexp never downloads anything behind the user's back, and
a machine without internet could not. ``weights: imagenet`` still works where Keras can
fetch (or has cached) the file.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from kexp.config.schema.common import spec_parts
from kexp.errors import ConfigError, ConfigIssue, KeyPath, nearest
from kexp.tf import keras


@functools.lru_cache(maxsize=None)
def architectures() -> dict[str, Any]:
    """Every model-building function ``keras.applications`` exports (``ResNet50``, ...)."""
    return {
        name: obj
        for name in dir(keras.applications)
        if name[:1].isupper() and callable(obj := getattr(keras.applications, name))
    }


def make_application(spec: Any, input_shape: tuple, name: str, path: KeyPath,
                     prefix: str = "") -> Any:
    """The architecture ``spec`` names, for inputs of ``input_shape``, as a model ``name``.

    ``prefix`` starts the name of every layer inside it (see :func:`with_prefix`).
    """
    arch, kwargs = spec_parts(spec)
    known = architectures()
    if arch not in known:
        raise ConfigError.single(
            path, f"unknown keras.applications architecture '{arch}'",
            suggestion=nearest(arch, known),
        )
    fn = known[arch]
    params = inspect.signature(fn).parameters
    bad = [k for k in kwargs if k not in params or k == "input_tensor"]
    if bad:
        raise ConfigError([
            ConfigIssue(
                path + (arch, key),
                f"{arch} takes no argument '{key}'" if key != "input_tensor" else
                "input_tensor is the node's input; give it under inputs:",
                suggestion=nearest(key, [p for p in params if p != "input_tensor"])
                if key != "input_tensor" else None,
            )
            for key in bad
        ])
    arguments = {"weights": None, "input_shape": input_shape, **kwargs}
    if "name" in params and "name" not in kwargs:
        arguments["name"] = name
    try:
        model = fn(**arguments)
    except Exception as exc:  # shape limits, bad weights, a failed download: all user-facing
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ConfigError.single(
            path + (arch,), f"{arch} (for inputs of shape {input_shape}) failed: {first}"
        ) from exc
    return with_prefix(model, prefix) if prefix else model


def with_prefix(model: Any, prefix: str) -> Any:
    """``model`` with every inner layer renamed ``prefix + name``, its weights kept.

    Keras names a weight after its layer alone (``conv1/kernel``), so two copies of one
    architecture in a model would give the optimizer two slots of one name, and the ``.h5``
    writer refuses that. The architecture functions name their layers themselves and their
    weights already exist, so the only way to rename is a clone (new layers from the same
    configs, in the same order) that then receives the original's weights: weights loaded
    from a file (``weights: path/to/file``) or downloaded are kept.
    """

    def renamed(layer: Any) -> Any:
        return layer.__class__.from_config({**layer.get_config(), "name": prefix + layer.name})

    def new_input(tensor: Any) -> Any:  # else Keras names it after the symbolic tensor
        name = prefix + tensor._keras_history.operation.name
        return keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=name)

    clone = keras.models.clone_model(model, input_tensors=keras.tree.map_structure(
        new_input, model.input), clone_function=renamed, recursive=True)
    clone.set_weights(model.get_weights())
    return clone
