"""A test plugin with one custom component of every kind kexp resolves by name.

Most are registered with ``keras.saving.register_keras_serializable`` (package ``kinds_test``);
``top_probability`` and ``HalfInit`` are left undecorated on purpose: kexp registers them
under the module's name (``kinds>...``). ``EpochRecorder`` is a callback (never saved).
"""

from __future__ import annotations

import keras
from keras import ops

PACKAGE = "kinds_test"

#: What EpochRecorder saw, per run: {layer name: [kernel sum after each epoch]}.
RECORDED: dict[str, list[float]] = {}


@keras.saving.register_keras_serializable(PACKAGE)
class Scale(keras.layers.Layer):
    """Multiplies by one learned scalar."""

    def __init__(self, start: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.start = start

    def build(self, input_shape):
        self.factor = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.start))

    def call(self, inputs):
        return inputs * self.factor

    def get_config(self):
        return {**super().get_config(), "start": self.start}


@keras.saving.register_keras_serializable(PACKAGE)
class WeightedSparseCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy with a weight per class."""

    def __init__(self, weights=(1.0,), name="weighted_sce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.weights = list(weights)

    def call(self, y_true, y_pred):
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        weight = ops.take(ops.convert_to_tensor(self.weights, dtype="float32"), labels)
        return weight * keras.losses.sparse_categorical_crossentropy(labels, y_pred)

    def get_config(self):
        return {**super().get_config(), "weights": self.weights}


@keras.saving.register_keras_serializable(PACKAGE)
class MeanConfidence(keras.metrics.Mean):
    """Mean probability of the predicted class."""

    def __init__(self, name="mean_confidence", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(ops.max(y_pred, axis=-1), sample_weight)


def top_probability(y_true, y_pred):
    """A metric function, undecorated: kexp registers it as kinds>top_probability."""
    return ops.max(y_pred, axis=-1)


@keras.saving.register_keras_serializable(PACKAGE)
class DampedSGD(keras.optimizers.SGD):
    """SGD whose gradients are multiplied by ``damping``."""

    def __init__(self, damping=0.5, **kwargs):
        super().__init__(**kwargs)
        self.damping = damping

    def update_step(self, gradient, variable, learning_rate):
        super().update_step(gradient * self.damping, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "damping": self.damping}


@keras.saving.register_keras_serializable(PACKAGE)
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to ``peak`` over ``warmup_steps``, then constant."""

    def __init__(self, peak=0.01, warmup_steps=10):
        self.peak = peak
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        progress = ops.minimum(ops.cast(step, "float32") / float(self.warmup_steps), 1.0)
        return self.peak * progress

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(PACKAGE)
class ScaledOnes(keras.initializers.Initializer):
    def __init__(self, value=0.05):
        self.value = value

    def __call__(self, shape, dtype=None):
        return ops.ones(shape, dtype=dtype) * self.value

    def get_config(self):
        return {"value": self.value}


class HalfInit(keras.initializers.Initializer):
    """Undecorated initializer class: kexp registers it as kinds>HalfInit."""

    def __call__(self, shape, dtype=None):
        return ops.ones(shape, dtype=dtype) * 0.5

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(PACKAGE)
class SumOfSquares(keras.regularizers.Regularizer):
    def __init__(self, factor=0.001):
        self.factor = factor

    def __call__(self, x):
        return self.factor * ops.sum(ops.square(x))

    def get_config(self):
        return {"factor": self.factor}


@keras.saving.register_keras_serializable(PACKAGE)
class ClipTo(keras.constraints.Constraint):
    def __init__(self, limit=1.0):
        self.limit = limit

    def __call__(self, w):
        return ops.clip(w, -self.limit, self.limit)

    def get_config(self):
        return {"limit": self.limit}


@keras.saving.register_keras_serializable(PACKAGE)
def soft_clip(x):
    """An activation function."""
    return 2.0 * ops.tanh(x / 2.0)


class EpochRecorder(keras.callbacks.Callback):
    """Records the kernel sum of one layer after every epoch (to see it frozen or not)."""

    def __init__(self, layer: str, key: str = "run"):
        super().__init__()
        self.layer = layer
        self.key = key

    def on_epoch_end(self, epoch, logs=None):
        kernel = self.model.get_layer(self.layer).kernel
        RECORDED.setdefault(self.key, []).append(float(ops.sum(kernel)))
