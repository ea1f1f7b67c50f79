"""Before training: the first examples of every split through the compiled model.

``fit`` finds a feature, label or metric that does not fit the model only inside a traced
step: for the training split at the first step, for the validation split at the end of the
first epoch, for the test split after the whole training. Each is a long TensorFlow stack
trace (``Matrix size-incompatible``, ``Received a label value of 7``, ``Cannot take the length
of shape with unknown rank``) and a run directory left ``failed``. Here a handful of real
examples of each split go eagerly through the model, ``model.compute_loss`` and each compiled
metric one by one, before any run directory exists, and a failure becomes a
:class:`~kexp.errors.ConfigIssue` at the key it comes from:

* the training split against the config: features at ``data.train.x`` (``features``), a label
  range or shape the loss refuses at ``compile.loss``, a metric that cannot be computed on
  these labels and outputs at ``compile.metrics[i]`` (``compile.metrics.<output>[i]``);
* every other split against the training split, which fits by then: its features, labels
  (range, shape, rank) at ``data.<split>.*`` (``data.<split>.split`` for a fraction of train).
  A label or feature rank that differs from train's fails even where each split alone would
  work: Keras evaluates validation and test with one traced function, and generalises the two
  shapes it sees to an unknown rank.

Keras builds and names the compiled metrics at their first update, so the same probe also
tells which names an epoch logs (``loss``, ``accuracy``, ``digit_loss``, ...), which
:func:`kexp.training.callbacks.check_monitors` checks every ``monitor`` against.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import numpy as np

from kexp.config.schema import ExperimentConfig, SplitSpec, spec_parts
from kexp.errors import ConfigError, ConfigIssue, KeyPath, format_path
from kexp.tf import keras
from kexp.training.class_weight import check_labels as check_class_weight_labels

#: Examples of each split that go through the model before training.
HEAD = 8

_OTHER_SPLITS = ("validation", "test")


def check_data_fits(model: Any, splits: Any, config: ExperimentConfig) -> set[str]:
    """Check every split against the compiled ``model``; return the names the training
    split's examples logged (loss and compiled metrics, as an epoch of ``fit`` names them).

    ``splits`` is a :class:`kexp.data.splits.Splits`; each split is in memory or streamed,
    and both give their first examples with ``head``. The metrics' states are reset after
    (``fit`` resets them at every epoch anyway); their variables are made in the strategy's
    scope, where ``fit`` would make them.
    """
    with model.distribute_strategy.scope():
        try:
            x, y, logged = _probe_train(model, splits.train, config)
            for name in _OTHER_SPLITS:
                arrays = getattr(splits, name)
                if arrays is not None:
                    _probe_split(model, name, arrays, (x, y), config)
        finally:
            model.reset_metrics()
    return logged


# ------------------------------------------------------------------------- the training split


def _probe_train(model: Any, arrays: Any, config: ExperimentConfig) -> tuple[Any, Any, set[str]]:
    """The training split against the config; returns its first ``x``, ``y`` and the names
    logged."""
    spec = config.data.train
    x, y = arrays.head(HEAD)
    y_pred = _forward(model, x, ("data", "train") + _key(spec, "x"), "")
    if y is None:
        raise ConfigError.single(("data", "train") + _key(spec, "y"), "training data needs labels")
    for output, classes in _sparse_outputs(model, config).items():
        of = f" of output '{output}'" if output else ""
        outside, fraction = _sparse_problem(arrays, output, classes)
        if outside is not None:
            low, high = outside
            raise ConfigError.single(
                ("compile", "loss"),
                f"sparse categorical labels{of} must be in [0, {classes}) for a model with "
                f"{classes} output units, but the labels range from {low:g} to {high:g}",
            )
        if fraction is not None:
            raise ConfigError.single(("data", "train") + _key(spec, "y"), _fraction(fraction, of))
    binary = _binary_problem(model, arrays, config)
    if binary is not None:
        raise ConfigError.single(("compile", "loss"), binary)
    check_class_weight_labels(arrays, y, model, config)
    try:
        _loss(model, x, y, y_pred)
    except Exception as exc:
        raise ConfigError.single(
            ("compile", "loss"),
            f"labels of shape {_shapes(y)} (per example) do not fit this loss with the "
            f"model's output of shape {_shapes(_np(y_pred))}: {_first_line(exc)}",
        ) from exc
    failures = _metric_failures(model, y, y_pred)
    if failures:
        raise ConfigError([
            ConfigIssue(path, f"{name} cannot be computed on these labels and outputs: "
                        f"{why}", suggestion=suggestion)
            for path, name, why, suggestion in map(partial(_described, config), failures)
        ])
    return x, y, set(model.compute_metrics(x, y, y_pred, sample_weight=None))


# ---------------------------------------------------------------------------- other splits


def _probe_split(model: Any, name: str, arrays: Any, train: tuple[Any, Any],
                 config: ExperimentConfig) -> None:
    """A validation or test split, once the training split (its first ``train`` examples)
    is known to fit: what fails now is this split's data."""
    spec = getattr(config.data, name)
    at: KeyPath = ("data", name)
    train_x, train_y = train
    if isinstance(spec, SplitSpec):  # a fraction of train: its rows, maybe other labels
        x_at = y_at = at + ("split",)
        drawn = " (drawn from data.train)"
    else:
        x_at, y_at, drawn = at + _key(spec, "x"), at + _key(spec, "y"), ""
    x, y = arrays.head(HEAD)
    y_pred = _forward(model, x, x_at, f"; data.train's are {_shapes(train_x)}")
    if y is None:
        raise ConfigError.single(
            at, f"the {name} split has no labels: it is evaluated with the loss and metrics, "
            "which need them")
    for role, mine, theirs, where in (("features", x, train_x, x_at),
                                      ("labels", y, train_y, y_at)):
        differs = _rank_mismatch(mine, theirs)
        if differs:
            raise ConfigError.single(
                where,
                f"{role} of shape {_shapes(mine)} per example{drawn}, but data.train's are "
                f"{_shapes(theirs)}{differs}: every split must give its {role} with the rank "
                "of data.train's (Keras evaluates validation and test with one traced "
                "function, which fails on two ranks)",
            )
    for output, classes in _sparse_outputs(model, config).items():
        of = f" of output '{output}'" if output else ""
        outside, fraction = _sparse_problem(arrays, output, classes)
        if outside is not None:
            low, high = outside
            raise ConfigError.single(
                y_at,
                f"labels{of}{drawn} range from {low:g} to {high:g}, but sparse categorical "
                f"labels must be in [0, {classes}) for this model ({classes} output units; "
                "compile.loss)",
            )
        if fraction is not None:
            raise ConfigError.single(y_at, _fraction(fraction, of + drawn))
    try:
        _loss(model, x, y, y_pred)
    except Exception as exc:
        raise ConfigError.single(
            y_at,
            f"labels of shape {_shapes(y)} per example{drawn} do not fit compile.loss "
            f"(data.train's of shape {_shapes(train_y)} do): {_first_line(exc)}",
        ) from exc
    failures = _metric_failures(model, y, y_pred)
    if failures:
        raise ConfigError([
            ConfigIssue(y_at, f"{name} labels{drawn}: {metric} ({format_path(path)}, which "
                        f"data.train's labels fit) cannot be computed on them: {why}")
            for path, metric, why, _ in map(partial(_described, config), failures)
        ])


def _rank_mismatch(mine: Any, theirs: Any) -> str:
    """Why the per-example ranks of a split's tensors differ from train's ('' when not)."""
    if isinstance(theirs, dict) or isinstance(mine, dict):
        if not (isinstance(theirs, dict) and isinstance(mine, dict)) or set(mine) != set(theirs):
            return " (keyed differently)"
        for key in theirs:
            if np.ndim(mine[key]) != np.ndim(theirs[key]):
                return f" (for '{key}')"
        return ""
    return " (another rank)" if np.ndim(mine) != np.ndim(theirs) else ""


# ----------------------------------------------------------------------------------- steps


def _forward(model: Any, x: Any, at: KeyPath, compare: str) -> Any:
    try:
        return model(x, training=False)
    except Exception as exc:
        raise ConfigError.single(
            at,
            f"features of shape {_shapes(x)} (per example) do not fit the model input "
            f"{_model_inputs(model)}{compare}: {_first_line(exc)}",
        ) from exc


def _loss(model: Any, x: Any, y: Any, y_pred: Any) -> None:
    loss = model.compute_loss(x=x, y=y, y_pred=y_pred)
    value = keras.ops.convert_to_numpy(loss)
    if not np.all(np.isfinite(value)):
        raise ValueError(f"the loss of the first examples is {float(value)}")


def _is_sparse(loss: Any) -> bool:
    """Whether a loss spec is a sparse categorical one (its labels are class ids)."""
    if isinstance(loss, str):
        return "sparse_categorical" in loss.lower()
    return isinstance(loss, dict) and any("Sparse" in str(k) for k in loss)


def _is_binary(loss: Any) -> bool:
    """Whether a loss spec is one of Keras' binary cross-entropies (labels in [0, 1])."""
    names = [loss] if isinstance(loss, str) else list(loss) if isinstance(loss, dict) else []
    return any(re.sub(r"[_\s]", "", str(name)).lower()
               in ("binarycrossentropy", "binaryfocalcrossentropy") for name in names)


def _sparse_outputs(model: Any, config: ExperimentConfig,
                    taking: Any = _is_sparse) -> dict[str | None, int]:
    """The outputs trained with a sparse categorical loss (or another loss ``taking``
    tells), and their number of classes (output units).

    A single-output model's is keyed None; a multi-output model's by output name, from a
    loss given per output (``{digit: sparse_categorical_crossentropy, ...}``) or one loss
    for all outputs.
    """
    loss = config.compile.loss
    names = list(getattr(model, "output_names", None) or [])
    if len(model.outputs) == 1:
        return {None: int(model.outputs[0].shape[-1])} if taking(loss) else {}
    if isinstance(loss, dict) and names and set(loss) <= set(names):
        per_output = loss
    elif isinstance(loss, list):
        per_output = dict(zip(names, loss))
    else:
        per_output = dict.fromkeys(names, loss)
    return {name: int(model.outputs[names.index(name)].shape[-1])
            for name, spec in per_output.items() if taking(spec)}


def _binary_problem(model: Any, arrays: Any, config: ExperimentConfig) -> str | None:
    """Why labels of an output trained with a binary cross-entropy are not in [0, 1]
    (Keras computes a loss from a label 2 without a word, and it means nothing), or None."""
    for output in _sparse_outputs(model, config, taking=_is_binary):
        found = arrays.label_range(output)
        if found is not None and (found[0] < 0 or found[1] > 1):
            of = f" of output '{output}'" if output else ""
            return (f"binary cross-entropy needs labels{of} in [0, 1] (0/1, or soft labels "
                    f"between), but the labels range from {found[0]:g} to {found[1]:g}; for "
                    "several classes use sparse_categorical_crossentropy with one unit per "
                    "class")
    return None


def _sparse_problem(arrays: Any, output: str | None, classes: int
                    ) -> tuple[tuple[float, float] | None, tuple[int, float] | None]:
    """``(low, high)`` when the labels fall outside ``[0, classes)``, and ``(example,
    value)`` of a label that is not a whole number (Keras would cast 1.5 to class 1)."""
    found = arrays.label_range(output)
    outside = found if found is not None and (found[0] < 0 or found[1] >= classes) else None
    return outside, (None if outside else arrays.fractional_label(output))


def _fraction(fraction: tuple[int, float], of: str) -> str:
    example, value = fraction
    return (f"label {value:g} of example {example + 1}{of} (counting from 1, in the split's "
            "order) is not a whole number, but sparse "
            f"categorical labels are class ids (Keras would take it as class {int(value)} "
            "without a word)")


# --------------------------------------------------------------------------------- metrics


#: (output name or None, index in that output's metric list, metric, why, y_true, y_pred)
Failure = tuple[str | None, int, Any, str, Any, Any]


def _metric_failures(model: Any, y: Any, y_pred: Any) -> list[Failure]:
    """Each compiled metric updated on its own with ``y`` and ``y_pred``: the ones that fail.

    Keras updates all compiled metrics together and says nothing of which one failed, so
    they are taken one by one from its ``CompileMetrics`` (private in Keras 3.15; without it,
    all together, and a failure is the whole ``compile.metrics``'s).
    """
    compiled = getattr(model, "_compile_metrics", None)
    if compiled is None:
        return []
    if not getattr(compiled, "built", True):
        compiled.build(y, y_pred)  # Keras chooses each metric (which accuracy) by the shapes
    if not all(hasattr(compiled, a) for a in ("_flat_metrics", "_flatten_y")):
        try:  # a Keras whose internals differ: the metrics as one
            compiled.update_state(y, y_pred)
            compiled.result()
        except Exception as exc:
            return [(None, -1, compiled, f"Keras says: {_first_line(exc)}", y, y_pred)]
        return []
    failures: list[Failure] = []
    for listed, y_t, y_p in zip(compiled._flat_metrics, compiled._flatten_y(y),
                                compiled._flatten_y(y_pred)):
        for index, metric in enumerate(getattr(listed, "metrics", None) or []):
            why = _misused(metric, y_t, y_p)
            if why is None:
                try:
                    metric.update_state(y_t, y_p)
                    metric.result()
                except Exception as exc:
                    why = f"Keras says: {_first_line(exc)}{_class_id_hint(y_t, y_p)}"
                finally:
                    metric.reset_state()
            if why is not None:
                failures.append((listed.output_name, index, metric, why, y_t, y_p))
    return failures


def _shape(tensor: Any) -> tuple[int | None, ...]:
    shape = getattr(tensor, "shape", None)
    return tuple(np.shape(tensor) if shape is None else shape)


def _units(y_pred: Any) -> int:
    shape = _shape(y_pred)
    return int(shape[-1]) if len(shape) > 1 and shape[-1] is not None else 1


def _class_id_hint(y_true: Any, y_pred: Any) -> str:
    """Why a metric fails on labels that are class ids (as Keras' own choice of
    ``accuracy`` tells them: fewer dimensions than the output, or one per example)."""
    true, units = _shape(y_true), _units(y_pred)
    if units == 1 or not (len(true) < len(_shape(y_pred)) or true[-1:] == (1,)):
        return ""
    return (f"; the labels are class ids (one per example), but this metric compares the "
            f"labels with the model's {units} output units one by one: it needs one-hot "
            "labels, shaped like the output")


def _misused(metric: Any, y_true: Any, y_pred: Any) -> str | None:
    """Why a metric that Keras computes without complaint gives a number that means nothing.

    ``categorical_accuracy`` compares the argmax of each label with the argmax of the output.
    Labels that are class ids have no such argmax (the figure is how often the model predicts
    some unrelated class, 0.0 on iris), and with one output unit both are always 0 (always
    1.0). Keras raises nothing; kexp refuses it like a metric that fails, since a monitor or
    a best checkpoint may select on it: the run would train to a meaningless figure.
    """
    if not isinstance(metric, keras.metrics.CategoricalAccuracy):
        return None
    if _units(y_pred) == 1:
        return ("categorical accuracy takes the argmax of one output unit, always 0, so it is "
                "always 1.0")
    if _shape(y_true) != _shape(y_pred):
        return ("categorical accuracy takes the argmax of each label, which needs one-hot "
                "labels; of class ids it means nothing (Keras raises no error, the figure "
                "is meaningless)")
    return None


def _described(config: ExperimentConfig, failure: Failure) -> tuple[KeyPath, str, str, str | None]:
    """(key path, the metric as the config names it, why, suggestion) of a failure."""
    output, index, metric, why, y_true, y_pred = failure
    path = _metric_path(config, output, index)
    name = _spec_name(config, path) or getattr(metric, "name", type(metric).__name__)
    for_output = f" of output '{output}'" if output and output not in path else ""
    why = (f"labels of shape {_shapes(y_true)} per example, model output{for_output} of "
           f"shape {_shapes(y_pred)}: {why}")
    suggestion = None
    if isinstance(metric, keras.metrics.CategoricalAccuracy):
        suggestion = "binary_accuracy" if _units(y_pred) == 1 else "sparse_categorical_accuracy"
    return path, name, why, suggestion


def _metric_path(config: ExperimentConfig, output: str | None, index: int) -> KeyPath:
    """Where the ``index``-th metric of ``output`` is written in ``compile.metrics``
    (kexp.model.outputs gives a flat list to every output; a mapping to its own)."""
    spec = config.compile.metrics
    base: KeyPath = ("compile", "metrics")
    if index < 0:
        return base
    if isinstance(spec, dict):
        if output in spec:
            return base + (output, index)
        # one output given {name: [...]}: Keras flattens the mapping in key order
        flat = [(key, i) for key in sorted(spec) for i in range(len(spec[key]))]
        return base + flat[index] if index < len(flat) else base
    return base + (index,)


def _spec_name(config: ExperimentConfig, path: KeyPath) -> str | None:
    value: Any = config.compile.metrics
    for part in path[2:]:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return spec_parts(value)[0] if isinstance(value, (str, dict)) and value else None


# ------------------------------------------------------------------------------- wording


def _key(spec: Any, role: str) -> KeyPath:
    """The key of a source that names its features (``role`` x) or labels (y), if it has one."""
    fields = getattr(type(spec), "model_fields", {})
    for key in (("x", "features") if role == "x" else ("y", "label")):
        if key in fields:
            return (key,)
    return ()


#: What TF wraps around the line that says what went wrong: an op's node prefix and its
#: "[Op:Equal] name:" suffix.
_OP_WRAPPING = re.compile(r"^\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$")


def _first_line(exc: BaseException) -> str:
    """What a Keras/TF error says went wrong, on one line: Keras' own message (the bold part
    of "Exception encountered when calling Sequential.call()."), without the arrays it may
    print whole or TF's op wrapping."""
    text = str(exc)
    bold = re.search(r"\x1b\[1m(.*?)\x1b\[0m", text, re.S)
    text = _without_arrays(bold.group(1) if bold else text)
    for line in text.strip().splitlines():
        line = _OP_WRAPPING.sub("", line).strip()
        if line and not line.startswith("Exception encountered when calling"):
            return line.rstrip(".")
    return type(exc).__name__


def _without_arrays(text: str) -> str:
    """``text`` with each printed nested array (``[[0. 0.] ...]``, many lines) as ``[...]``."""
    out, index = [], 0
    while (start := text.find("[[", index)) >= 0:
        depth, end = 0, start
        while end < len(text):
            depth += {"[": 1, "]": -1}.get(text[end], 0)
            end += 1
            if depth == 0:
                break
        out.append(text[index:start] + "[...]")
        index = end
    return "".join(out) + text[index:]


def _np(tensors: Any) -> Any:
    if isinstance(tensors, dict):
        return {k: keras.ops.convert_to_numpy(v) for k, v in tensors.items()}
    if isinstance(tensors, (list, tuple)):
        return {str(i): keras.ops.convert_to_numpy(v) for i, v in enumerate(tensors)}
    return keras.ops.convert_to_numpy(tensors)


def _shapes(tensors: Any) -> str:
    if isinstance(tensors, dict):
        return ", ".join(f"{k}: {tuple(np.shape(v)[1:])}" for k, v in tensors.items())
    return str(tuple(np.shape(tensors)[1:]))


def _model_inputs(model: Any) -> str:
    shapes = [tuple(t.shape[1:]) for t in model.inputs]
    return str(shapes[0]) if len(shapes) == 1 else str(shapes)
