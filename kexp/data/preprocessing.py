"""Keras preprocessing layers declared in ``data.preprocessing``, saved inside the model.

    data:
      preprocessing:
        columns:                         # per named feature (csv column), then concatenated
          island: [StringLookup: {output_mode: one_hot}]
          body_mass_g: [Normalization: {}]
        layers: [Normalization: {}]      # on the (combined) features
        augmentation: [RandomFlip: {mode: horizontal}]   # active in training only

Every layer that has ``adapt`` (Normalization, StringLookup, IntegerLookup, TextVectorization,
Discretization) is adapted on the *training* split alone, after the layers before it, so no
statistic leaks from validation or test data. The layers are then put in front of the model
the config declares, in one Keras model that takes the raw features: ``model.keras`` holds
them, so ``kexp predict`` on raw input computes exactly what training saw. Augmentation
layers stay in the model too; Keras runs them only when ``training=True``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from kexp.config.schema import ExperimentConfig, PreprocessingSection, spec_parts
from kexp.data.stream import Stream, guard_batches, nonfinite_error
from kexp.errors import ConfigError, ConfigIssue, KeyPath, nearest
from kexp.model import compile_model
from kexp.resolve import make_layer
from kexp.tf import keras

_AT: KeyPath = ("data", "preprocessing")
_ADAPT_BATCH = 256


def wanted(config: ExperimentConfig) -> bool:
    """Whether the config declares any preprocessing layer."""
    spec = config.data.preprocessing
    return spec is not None and bool(spec.columns or spec.layers or spec.augmentation)


def _layers(specs: list[Any], at: KeyPath, issues: list[ConfigIssue]) -> list[Any]:
    made = []
    for i, spec in enumerate(specs):
        try:
            made.append(make_layer(spec, at + (i,)))
        except ConfigError as exc:
            issues.extend(exc.issues)
    return made


def _features(dataset: Any, labelled: bool) -> Any:
    return dataset.map(lambda x, y: x) if labelled else dataset


def _apply(layers: list[Any], tensor: Any, at: KeyPath, specs: list[Any]) -> Any:
    for i, layer in enumerate(layers):
        try:
            tensor = layer(tensor)
        except Exception as exc:
            name, _ = spec_parts(specs[i])
            raise ConfigError.single(
                at + (i,), f"{name} cannot take its input of shape {tuple(tensor.shape)} "
                f"({tensor.dtype}): {_first_line(exc)}",
            ) from exc
    return tensor


def _adapt_chain(layers: list[Any], data: Any, at: KeyPath, specs: list[Any]) -> None:
    """Adapt each adaptable layer on ``data`` passed through the layers before it."""
    done: list[Any] = []
    for i, layer in enumerate(layers):
        if hasattr(layer, "adapt"):
            prefix = list(done)
            mapped = data.map(_chain(prefix)) if prefix else data
            try:
                layer.adapt(mapped)
            except Exception as exc:
                name, _ = spec_parts(specs[i])
                raise ConfigError.single(
                    at + (i,), f"{name} could not adapt to the training data: {_first_line(exc)}"
                ) from exc
        done.append(layer)


@contextmanager
def _nan_in_stream(train: Any) -> Iterator[None]:
    """A NaN that a streamed split's check met while a layer adapted (the first pass over
    it, kexp.data.stream.guard_batches) is the data's error, not the layer's."""
    try:
        yield
    except ConfigError as exc:
        found = nonfinite_error(exc.__cause__, train.at) if (
            exc.__cause__ is not None and isinstance(train, Stream)) else None
        if found is None:
            raise
        raise found from None


def _chain(layers: list[Any]) -> Callable[[Any], Any]:
    def run(tensor: Any) -> Any:
        for layer in layers:
            tensor = layer(tensor)
        return tensor

    return run


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _raw_inputs(x_spec: Any) -> Any:
    if isinstance(x_spec, dict):
        return {k: keras.Input(shape=tuple(s.shape), dtype=s.dtype.name, name=k)
                for k, s in x_spec.items()}
    return keras.Input(shape=tuple(x_spec.shape), dtype=x_spec.dtype.name, name="features")


def _check_formats(config: ExperimentConfig, layers: list[Any]) -> None:
    """Refuse ``.h5`` output for lookup layers: the legacy format drops their vocabulary.

    A model.h5 written anyway would load, then fail at its first prediction with "Table not
    initialized"; better to say so before training.
    """
    if "h5" not in config.output.formats:
        return
    lookups = (keras.layers.StringLookup, keras.layers.IntegerLookup, keras.layers.TextVectorization)
    found = sorted({type(layer).__name__ for layer in layers if isinstance(layer, lookups)})
    if found:
        raise ConfigError.single(
            ("output", "formats"),
            f"the .h5 format cannot hold the vocabulary of {', '.join(found)} "
            "(data.preprocessing): its model.h5 could not predict. Use formats: [keras]",
        )


def _encode_columns(
    spec: PreprocessingSection, raw: Any, x_data: Any, issues: list[ConfigIssue],
    config: ExperimentConfig,
) -> dict[str, Any] | Any:
    at = _AT + ("columns",)
    if not isinstance(raw, dict):
        if spec.columns:
            raise ConfigError.single(
                at, "the features are one array, not named columns: use "
                "data.preprocessing.layers (columns is for csv columns / named inputs)"
            )
        return raw
    for name in spec.columns:
        if name not in raw:
            issues.append(ConfigIssue(
                at + (name,), f"no feature column '{name}' (features: {', '.join(raw)})",
                suggestion=nearest(name, raw)))
    if issues:
        raise ConfigError(issues)
    made = {name: _layers(specs, at + (name,), issues) for name, specs in spec.columns.items()}
    if issues:
        raise ConfigError(issues)
    encoded = {}
    for name, tensor in raw.items():
        layers = made.get(name, [])
        column = x_data.map(lambda x, name=name: x[name])
        _adapt_chain(layers, column.batch(_ADAPT_BATCH), at + (name,), spec.columns.get(name, []))
        encoded[name] = _apply(layers, tensor, at + (name,), spec.columns.get(name, []))
    _check_formats(config, [layer for made_layers in made.values() for layer in made_layers])
    return encoded


def _combine(encoded: dict[str, Any], model: Any) -> Any:
    """One vector for a one-input model (columns in data order); else keep them by name."""
    if len(model.inputs) > 1:
        return encoded
    for name, tensor in encoded.items():
        if tensor.dtype not in ("float16", "float32", "float64", "bfloat16"):
            raise ConfigError.single(
                _AT + ("columns", name),
                f"column '{name}' is {tensor.dtype} after its preprocessing; encode it into "
                "numbers (StringLookup/IntegerLookup with output_mode: one_hot, Normalization, "
                "...) so it can be concatenated with the other features",
            )
    tensors = list(encoded.values())
    if len(tensors) == 1:
        return tensors[0]
    return keras.layers.Concatenate(name="preprocessed_features")(
        [keras.layers.Identity(dtype="float32")(t) for t in tensors]
    )


def attach_preprocessing(model: Any, config: ExperimentConfig, train: Any, strategy: Any) -> Any:
    """The model with the adapted preprocessing in front, compiled as ``config`` says.

    ``train`` is the training split (after fraction splits are taken out): the only data
    the layers adapt on. Returns ``model`` unchanged when there is no preprocessing.
    """
    if not wanted(config):
        return model
    spec = config.data.preprocessing
    issues: list[ConfigIssue] = []
    _uncompile(model)
    with strategy.scope():
        layers = _layers(spec.layers, _AT + ("layers",), issues)
        augmentation = _layers(spec.augmentation, _AT + ("augmentation",), issues)
        if issues:
            raise ConfigError(issues)
        _check_formats(config, layers)
        x_data = _features(train.dataset(), train.has_labels)
        if isinstance(train, Stream) and train.finite_guard:  # a NaN would be adapted to
            x_data = guard_batches(x_data.batch(_ADAPT_BATCH), train.at, False).unbatch()
        raw = _raw_inputs(x_data.element_spec)
        with _nan_in_stream(train):
            tensor = _encode_columns(spec, raw, x_data, issues, config)
        if isinstance(tensor, dict):
            tensor = _combine(tensor, model)
        if layers:
            if isinstance(tensor, dict):
                raise ConfigError.single(
                    _AT + ("layers",), "the features are several named inputs: put their "
                    "layers under data.preprocessing.columns.<name>")
            combined = x_data.batch(_ADAPT_BATCH)
            if isinstance(raw, dict):
                encoder = keras.Model(raw, tensor)
                combined = combined.map(lambda x: encoder(x, training=False))
            with _nan_in_stream(train):
                _adapt_chain(layers, combined, _AT + ("layers",), spec.layers)
            tensor = _apply(layers, tensor, _AT + ("layers",), spec.layers)
        tensor = _apply(augmentation, tensor, _AT + ("augmentation",), spec.augmentation)
        try:
            outputs = model(tensor)
        except Exception as exc:
            raise ConfigError.single(
                _AT, f"the preprocessed features have shape {_shape(tensor)}, which the model "
                f"input {_shape(model.inputs)} does not take: {_first_line(exc)}; set the "
                "model's input shape to the preprocessed one",
            ) from exc
        if isinstance(outputs, (list, tuple)):
            outputs = dict(zip(model.output_names, outputs))
        wrapped = keras.Model(raw, outputs, name=model.name)
        compile_model(wrapped, config)
    return wrapped


def _uncompile(model: Any) -> None:
    """Forget the inner model's own compile: the wrapper is compiled and saved with its.

    Otherwise the inner model's unused optimizer is saved too, and reloading warns that its
    variables do not match.
    """
    model.compiled = False
    model.optimizer = None


def _shape(tensors: Any) -> str:
    if isinstance(tensors, dict):
        return "{" + ", ".join(f"{k}: {_shape(v)}" for k, v in tensors.items()) + "}"
    if isinstance(tensors, (list, tuple)):
        return ", ".join(_shape(t) for t in tensors) if len(tensors) != 1 else _shape(tensors[0])
    return "(" + ", ".join("None" if d is None else str(d) for d in tensors.shape[1:]) + ")"


__all__ = ["attach_preprocessing", "wanted"]
