"""``train.class_weight`` checked against the model, and completed for Keras.

Keras turns ``class_weight`` into a table of ``max(key) + 1`` weights, gives 1.0 to the
indices below the largest key that the dict leaves out, and looks each label up in it inside
the input pipeline (``keras/src/trainers/data_adapters/data_adapter_utils.py``). So a dict
that leaves out the *last* class trains until the first such label, then fails with a
``GatherV2 ... indices[0] = 2 is not in [0, 2)`` traceback from a ``MapDataset``; a key past
the model's classes is silently never used; and a model with several outputs is refused
only when ``fit`` starts.

Here those are decided before the run directory exists, from the model's output: a
classifier with ``n`` output units has ``n`` classes (one sigmoid unit: 2). Keys outside
``0..n-1`` and multi-output models are config errors at ``train.class_weight``; classes the
dict leaves out get weight 1.0, as Keras gives the ones below its largest key, so ``{1: 5.0}``
on a binary classifier means what it says. The completed table is what ``fit`` gets.

Example::

    >>> complete({1: 5.0}, classes=3)
    {0: 1.0, 1: 5.0, 2: 1.0}
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from kexp.config.schema import ExperimentConfig
from kexp.errors import ConfigError

_KEY = ("train", "class_weight")


def complete(weights: Mapping[int, float], classes: int) -> dict[int, float]:
    """``weights`` with every class ``0..classes-1``, the missing ones at 1.0."""
    return {index: float(weights.get(index, 1.0)) for index in range(classes)}


def classes_of(model: Any) -> int:
    """The number of classes of a single-output classifier: its output units (1 unit: 2)."""
    units = model.outputs[0].shape[-1]
    return 2 if units in (None, 1) else int(units)


def class_weights(model: Any, config: ExperimentConfig) -> dict[int, float] | None:
    """The class weights ``fit`` gets for ``model``, or ``None``; a ``ConfigError`` at
    ``train.class_weight`` when they cannot apply to it."""
    weights = config.train.class_weight
    if weights is None:
        return None
    if len(model.outputs) != 1:
        names = ", ".join(model.output_names)
        raise ConfigError.single(
            _KEY,
            f"class weights apply to a model with one output, and this one has "
            f"{len(model.outputs)} ({names}); Keras refuses them then. Weigh the outputs' "
            "losses with compile.loss_weights, or weigh examples in the data instead",
        )
    classes = classes_of(model)
    outside = sorted(key for key in weights if key >= classes)
    if outside:
        listed = ", ".join(map(str, outside))
        raise ConfigError.single(
            _KEY,
            f"class {listed} {'is' if len(outside) == 1 else 'are'} not a class of this model: "
            f"its output has {classes} classes, 0..{classes - 1} (the weight would never be "
            "used)",
        )
    table = complete(weights, classes)
    if not any(table.values()):
        raise ConfigError.single(
            _KEY,
            f"every class of this model ({classes}) weighs 0: every example's loss would be 0 "
            "and nothing would be trained; give some class a positive weight",
        )
    return table


def check_labels(arrays: Any, first_labels: Any, model: Any, config: ExperimentConfig) -> None:
    """The training labels are class ids the weight table covers, or a ``ConfigError`` at
    ``train.class_weight``.

    Keras looks each label up in the table: a label of rank 1 (or one column) is cast to an
    integer class id, wider labels (one-hot) by their argmax. So class ids outside
    ``0..classes-1`` — a regression target, or labels 0..2 on a one-unit sigmoid model —
    fail inside the input pipeline with a ``GatherV2`` traceback after the run directory
    exists, and a label 1.5 is weighed as class 1 without a word. ``arrays`` is the training
    split (in memory or streamed); ``first_labels`` its first labels, for their shape.
    """
    if config.train.class_weight is None or len(model.outputs) != 1:
        return
    shape = np.shape(first_labels)
    if len(shape) > 1 and shape[-1] not in (None, 1):
        return  # one-hot: Keras takes the argmax, always a class of the model
    classes = classes_of(model)
    found = arrays.label_range(None)
    if found is not None and (found[0] < 0 or found[1] > classes - 1):
        low, high = found
        raise ConfigError.single(
            _KEY,
            f"class weights need labels that are class ids 0..{classes - 1} (this model's "
            f"output has {classes} classes), but the training labels range from {low:g} to "
            f"{high:g}; class weights apply to classification, not to a regression target",
        )
    fraction = arrays.fractional_label(None)
    if fraction is not None:
        example, value = fraction
        raise ConfigError.single(
            _KEY,
            f"class weights need labels that are class ids, but label {value:g} of training "
            f"example {example + 1} (counting from 1) is not a whole number (Keras would "
            f"weigh it as class {int(value)} without a word)",
        )
