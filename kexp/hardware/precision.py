"""Mixed precision through Keras' own dtype policy.

    hardware: {mixed_precision: float16}     # or bfloat16, or none

The global policy (``mixed_float16`` / ``mixed_bfloat16``) is set before the model is built,
so every layer computes in 16 bits and keeps float32 variables. Two things make it safe:

* the layers that produce the model's outputs are rebuilt with a float32 policy
  (:func:`float32_outputs`): a softmax or sigmoid in float16 under/overflows, and the loss
  then sees zeros and ones;
* with float16 Keras' ``compile`` wraps the optimizer in a ``LossScaleOptimizer`` (small
  gradients would flush to zero otherwise). bfloat16 has float32's range and needs none.

The policy is process-wide: :func:`set_policy` is called for every run, ``none`` included,
so one run's policy never leaks into the next one in the same process, and ``kexp.train``
restores the caller's policy when it returns (:func:`policy_kept`): a float16 run left
``mixed_float16`` behind, and a ``.h5`` loaded after it came back with a loss-scale
optimizer its saved state did not fit.

Reloading: every layer's policy is saved with the model, so ``keras.models.load_model``
predicts the same under any global policy. The loss-scale wrapper is not saved, though:
Keras re-wraps the optimizer only when the global policy is ``mixed_float16`` at load time,
and otherwise drops the optimizer state with a warning. :func:`load_model` sets the saved
policy around the load, for resuming training from a float16 model or checkpoint.
"""

from __future__ import annotations

import json
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

POLICIES = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def set_policy(mode: str) -> str:
    """Set the Keras global dtype policy for ``mode``; returns the policy name."""
    from kexp.tf import keras

    name = POLICIES[mode]
    keras.mixed_precision.set_dtype_policy(name)
    return name


@contextmanager
def policy_kept() -> Iterator[None]:
    """The global dtype policy as it was before, whatever the block sets."""
    from kexp.tf import keras

    previous = keras.mixed_precision.dtype_policy()
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def _output_layers(model: Any) -> list[Any]:
    layers = []
    for tensor in model.outputs:
        layer = tensor._keras_history.operation
        if layer not in layers:
            layers.append(layer)
    return layers


def float32_outputs(model: Any) -> Any:
    """``model`` with its output layers computing in float32 (a clone when any changed).

    Cloning goes through each layer's config, the same way Keras saves and loads models, so
    the result has the user's layers with one thing changed: the output layers' ``dtype``.
    The weights are copied over (pretrained backbones keep theirs): variables are float32
    under every policy, so the shapes and dtypes match one for one.
    """
    from kexp.tf import keras

    targets = {id(layer) for layer in _output_layers(model)
               if layer.dtype_policy.compute_dtype != "float32"}
    if not targets:
        return model

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        if id(layer) in targets:
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    cloned = keras.models.clone_model(model, clone_function=clone)
    cloned.set_weights(model.get_weights())
    return cloned


def describe(model: Any) -> dict[str, Any]:
    """What the manifest records: the policy, output dtypes and loss scaling."""
    from kexp.tf import keras

    return {
        "policy": model.dtype_policy.name,
        "output_dtypes": [layer.dtype_policy.compute_dtype for layer in _output_layers(model)],
        "loss_scaling": isinstance(
            getattr(model, "optimizer", None), keras.optimizers.LossScaleOptimizer
        ),
    }


def saved_policy(path: str | Path) -> str | None:
    """The model-level dtype policy stored in a ``.keras`` archive (None if not recorded)."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        return None
    inner = config.get("config") if isinstance(config, dict) else None
    if not isinstance(inner, dict):  # not a model Keras saved: its loader says what is wrong
        return None
    dtype = inner.get("dtype")
    if isinstance(dtype, dict):
        return (dtype.get("config") or {}).get("name")
    return dtype if isinstance(dtype, str) else None


def load_model(path: str | Path, **kwargs: Any) -> Any:
    """``keras.models.load_model`` under the model's own policy (keeps float16 loss scaling
    and its optimizer state); the global policy is restored afterwards."""
    from kexp.tf import keras

    policy = saved_policy(path) if str(path).endswith(".keras") else None
    previous = keras.mixed_precision.dtype_policy()
    if policy:
        keras.mixed_precision.set_dtype_policy(policy)
    try:
        return keras.models.load_model(path, **kwargs)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
