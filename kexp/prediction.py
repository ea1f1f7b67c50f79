"""``kexp predict``: a saved model's predictions for a csv or npz file.

    table = predict("experiments/digits-cnn/20261203-120000-ab12cd", "new_digits.npz",
                    output="predictions.csv")

A classifier gets, per example, the probability of each class and the predicted label
(the most likely class; for a single sigmoid unit, probability >= 0.5). Other models get
their raw outputs. A multi-output model gets one group of columns per output.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from kexp.errors import UserError
from kexp.inputs import check_fits, read_input
from kexp.outputs import check_output_file, writing
from kexp.runs import load_model, resolve_target
from kexp.training.artifacts import atomic_path, write_text


def _activation(model: Any, output_index: int) -> str | None:
    """Name of the activation that produces an output (softmax / sigmoid / ...), if known."""
    try:
        history = model.outputs[output_index]._keras_history
        while type(history.operation).__name__ == "Identity":  # renamed by a functional graph
            history = history.operation._inbound_nodes[0].input_tensors[0]._keras_history
    except (AttributeError, IndexError):
        return None
    layer = history.operation
    if getattr(layer, "outputs", None) and layer is not model:
        # a model nested in a wrapper (data.preprocessing in front of the config's model):
        # the activation is that of the inner model's output this tensor is (its index
        # among the inner call's outputs, flattened as the inner model's ``outputs`` are)
        return _activation(layer, history.tensor_index)
    activation = getattr(layer, "activation", None)
    if activation is not None:
        return getattr(activation, "__name__", None)
    return type(layer).__name__.lower()  # a Softmax layer, for instance


def _columns(name: str, values: np.ndarray, activation: str | None,
             class_names: list[str] | None) -> dict[str, np.ndarray]:
    prefix = f"{name}_" if name else ""
    values = values.reshape(len(values), -1)
    width = values.shape[1]
    out: dict[str, np.ndarray] = {}
    if activation == "softmax" and width > 1:
        names = class_names if class_names and len(class_names) == width else [str(i) for i in range(width)]
        for i, cls in enumerate(names):
            out[f"{prefix}prob_{cls}"] = values[:, i]
        index = values.argmax(axis=1)
        out[f"{prefix}predicted_label"] = np.asarray(names, dtype=object)[index] if class_names else index
    elif activation == "sigmoid" and width == 1:
        out[f"{prefix}probability"] = values[:, 0]
        out[f"{prefix}predicted_label"] = (values[:, 0] >= 0.5).astype("int64")
    else:
        for i in range(width):
            out[f"{prefix}prediction_{i}" if width > 1 else f"{prefix}prediction"] = values[:, i]
    return out


def prediction_columns(model: Any, predictions: Any, class_names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Named output columns for ``model.predict`` results (one array, a list or a dict)."""
    if isinstance(predictions, dict):
        from kexp.tf import keras

        # model.outputs are the output structure flattened (a dict in Keras' key order): the
        # index of each name, whatever the output layers are called (the preprocessing
        # wrapper's are all the inner model)
        order = keras.tree.flatten({name: name for name in predictions})
        return {k: v for name, p in predictions.items()
                for k, v in _columns(name, np.asarray(p), _activation(model, order.index(name)),
                                     class_names).items()}
    if isinstance(predictions, (list, tuple)):
        names = list(getattr(model, "output_names", []) or [str(i) for i in range(len(predictions))])
        return {k: v for i, p in enumerate(predictions)
                for k, v in _columns(names[i], np.asarray(p), _activation(model, i), class_names).items()}
    return _columns("", np.asarray(predictions), _activation(model, 0), class_names)


def predict(
    target: str | Path,
    input: str | Path,
    *,
    output: str | Path | None = None,
    x: str | dict[str, str] | None = None,
    features: list[str] | None = None,
    batch_size: int = 256,
    overwrite: bool = False,
) -> dict[str, np.ndarray]:
    """Predict for every example in ``input``; write csv or npz to ``output`` when given.

    ``output`` is checked first (a new file in a writable folder: an existing file is only
    replaced with ``overwrite``), so a path that cannot be written costs no model loading
    and no predicting.
    """
    if output is not None:
        check_output_file(output, "--output", example="predictions.csv",
                          may_replace=lambda _: overwrite,
                          inputs={input: "the input being predicted", target: "the model"},
                          suffixes=(".csv", ".npz"))
    found = resolve_target(target)
    manifest = found.manifest()
    class_names = manifest.data.get("class_names") if manifest else None
    arrays = read_input(input, found.config, labels=False, class_names=class_names,
                        x=x, features=features)
    model = load_model(found.model_file, safe_mode=found.safe_mode)
    check_fits(model, arrays, input, labels=False)  # the first examples, in the user's terms
    from kexp.data.pipeline import make_dataset

    try:
        # through tf.data, like training: string columns, folders and TFRecords included
        feed = make_dataset(arrays, batch_size, training=False, seed=0, cache=False)
        predictions = model.predict(feed, verbose=0)
    except (ValueError, TypeError) as exc:
        raise UserError(f"the model cannot take the input {input}: {str(exc).splitlines()[0]}") from None
    columns = prediction_columns(model, predictions, class_names)
    if arrays.names is not None:  # which file each prediction is for
        columns = {"file": np.asarray(arrays.names, dtype=object), **columns}
    if output is not None:
        with writing(output, "--output"):
            write_predictions(columns, Path(output))
    return columns


def to_csv(columns: dict[str, np.ndarray]) -> str:
    """CSV text with a header row; floats at full float32 precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in zip(*columns.values()):
        writer.writerow([f"{v:.8g}" if isinstance(v, (float, np.floating)) else v for v in row])
    return buffer.getvalue()


def write_predictions(columns: dict[str, np.ndarray], path: Path) -> None:
    """Write ``.npz`` (one array per column) or csv, atomically."""
    if path.suffix.lower() == ".npz":
        with atomic_path(path) as tmp:
            with tmp.open("wb") as handle:
                np.savez(handle, **{k: np.asarray(v).astype(str) if np.asarray(v).dtype == object else v
                                    for k, v in columns.items()})
    else:
        write_text(path, to_csv(columns))
