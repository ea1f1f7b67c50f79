"""Custom Keras components for configs/plugins/digits_custom.yaml (a kexp plugin file).

A plugin is ordinary Keras code. Each component is registered with Keras' own
``register_keras_serializable`` under the package ``digits_plugins``, so that:

* a config that lists this file under ``plugins:`` uses them by name (``SqueezeExcite``,
  ``SparseFocalLoss``, ``MacroF1``), exactly like built-in Keras names;
* a saved model reloads anywhere this module has been imported, with plain Keras:

      import sys; sys.path.insert(0, "configs/plugins")
      import components, keras
      model = keras.models.load_model("experiments/digits-custom/<run>/model.keras")
"""

from __future__ import annotations

import keras
from keras import ops

PACKAGE = "digits_plugins"


@keras.saving.register_keras_serializable(package=PACKAGE)
class SqueezeExcite(keras.layers.Layer):
    """Channel attention (Hu et al., 2018): reweigh each channel of a feature map by a gate
    computed from the whole map, so the network can emphasise informative channels."""

    def __init__(self, ratio: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.ratio = ratio

    def build(self, input_shape):
        channels = input_shape[-1]
        self.squeeze = keras.layers.Dense(max(1, channels // self.ratio), activation="relu")
        self.excite = keras.layers.Dense(channels, activation="sigmoid")
        self.squeeze.build((input_shape[0], channels))
        self.excite.build((input_shape[0], max(1, channels // self.ratio)))

    def call(self, inputs):
        pooled = ops.mean(inputs, axis=tuple(range(1, len(inputs.shape) - 1)))
        gate = self.excite(self.squeeze(pooled))
        return inputs * ops.reshape(gate, (-1,) + (1,) * (len(inputs.shape) - 2) + (gate.shape[-1],))

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SparseFocalLoss(keras.losses.Loss):
    """Focal loss (Lin et al., 2017) for integer labels: cross-entropy down-weighted by
    ``(1 - p_true) ** gamma`` so that easy, well-classified examples count less.
    (Keras' CategoricalFocalCrossentropy needs one-hot labels.)"""

    def __init__(self, gamma: float = 2.0, from_logits: bool = False, name: str = "sparse_focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma = gamma
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        probs = ops.softmax(y_pred, axis=-1) if self.from_logits else y_pred
        classes = ops.shape(probs)[-1]
        labels = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), classes)
        p_true = ops.sum(labels * probs, axis=-1)
        p_true = ops.clip(p_true, keras.config.epsilon(), 1.0)
        return -ops.power(1.0 - p_true, self.gamma) * ops.log(p_true)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "from_logits": self.from_logits}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MacroF1(keras.metrics.Metric):
    """Macro-averaged F1 for integer labels and class probabilities: the F1 of each class,
    averaged, so that every class weighs the same however rare it is. (Keras' F1Score
    needs one-hot labels.)"""

    def __init__(self, num_classes: int, name: str = "macro_f1", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.true_positives = self.add_variable((num_classes,), initializer="zeros", name="tp")
        self.predicted = self.add_variable((num_classes,), initializer="zeros", name="predicted")
        self.actual = self.add_variable((num_classes,), initializer="zeros", name="actual")

    def update_state(self, y_true, y_pred, sample_weight=None):
        true = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), self.num_classes)
        pred = ops.one_hot(ops.argmax(y_pred, axis=-1), self.num_classes)
        if sample_weight is not None:
            weight = ops.reshape(ops.cast(sample_weight, self.dtype), (-1, 1))
            true, pred = true * weight, pred * weight
        self.true_positives.assign_add(ops.sum(true * pred, axis=0))
        self.predicted.assign_add(ops.sum(pred, axis=0))
        self.actual.assign_add(ops.sum(true, axis=0))

    def result(self):
        denominator = self.predicted + self.actual
        f1 = ops.where(denominator > 0, 2.0 * self.true_positives / ops.maximum(denominator, 1e-9), 0.0)
        return ops.mean(f1)

    def reset_state(self):
        for variable in (self.true_positives, self.predicted, self.actual):
            variable.assign(ops.zeros_like(variable))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
