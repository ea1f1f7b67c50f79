"""A test plugin for training stages and callbacks (tests/test_stages_callbacks.py).

``StageProbe`` records a training as a callback sees it: when training begins and ends, and
one layer's kernel at each epoch's beginning and end. ``WatchMetric`` is a user callback
with a ``monitor`` argument; ``mean_top`` a metric function. The other functions are for callbacks that take a function
(``LearningRateScheduler``'s ``schedule``, ``LambdaCallback``'s hooks); kexp registers them
under this module's name (``stage_probe>halve_each_epoch``).
"""

from __future__ import annotations

import keras
from keras import ops

#: What the callbacks of this module saw, per key.
EVENTS: dict[str, list[tuple]] = {}


def _kernel_sum(model, layer: str) -> float:
    return float(ops.sum(model.get_layer(layer).kernel))


class StageProbe(keras.callbacks.Callback):
    """Appends ``("train_begin",)``, ``("epoch_begin", epoch, kernel sum)``, ... to EVENTS[key]."""

    def __init__(self, key: str, layer: str = "head"):
        super().__init__()
        self.key = key
        self.layer = layer

    def _add(self, *event) -> None:
        EVENTS.setdefault(self.key, []).append(event)

    def on_train_begin(self, logs=None):
        self._add("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self._add("epoch_begin", epoch, _kernel_sum(self.model, self.layer))

    def on_epoch_end(self, epoch, logs=None):
        self._add("epoch_end", epoch, _kernel_sum(self.model, self.layer))

    def on_train_end(self, logs=None):
        self._add("train_end")


class WatchMetric(keras.callbacks.Callback):
    """A user callback that reads one logged value (``monitor``) at every epoch end."""

    def __init__(self, monitor: str = "val_loss", key: str = "watch"):
        super().__init__()
        self.monitor = monitor
        self.key = key

    def on_epoch_end(self, epoch, logs=None):
        EVENTS.setdefault(self.key, []).append((epoch, float(logs[self.monitor])))


def mean_top(y_true, y_pred):
    """A metric function, which (unlike Keras' metric classes) declares no direction."""
    return ops.max(y_pred, axis=-1)


def halve_each_epoch(epoch, learning_rate):
    """A ``LearningRateScheduler`` schedule: 0.02, then halved at every epoch."""
    return 0.02 * 0.5 ** epoch


def note_epoch(epoch, logs):
    """A ``LambdaCallback`` ``on_epoch_end`` hook."""
    EVENTS.setdefault("lambda", []).append(("epoch_end", epoch))


def takes_nothing():
    """A function with the wrong arguments for any callback hook."""
