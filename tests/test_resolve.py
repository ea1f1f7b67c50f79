"""Names resolve through Keras itself: every layer, optimizer, loss, metric and callback class
Keras exports works by name, and bad names or arguments are config errors with suggestions."""

from __future__ import annotations

import inspect

import pytest

from kexp.errors import ConfigError
from kexp.resolve import (
    accepted_kwargs,
    keras_arguments,
    make_callback,
    make_layer,
    make_loss,
    make_metric,
    make_optimizer,
)
from kexp.tf import keras


def _classes(module, base):
    return sorted(
        n for n in dir(module)
        if isinstance(getattr(module, n), type) and issubclass(getattr(module, n), base)
        and not inspect.isabstract(getattr(module, n)) and not n.startswith("_")
    )


def test_every_keras_optimizer_resolves_by_class_name() -> None:
    names = [n for n in _classes(keras.optimizers, keras.optimizers.Optimizer)
             if n not in {"Optimizer", "LossScaleOptimizer", "MultiOptimizer", "OptimizerMap"}]  # wrappers of other optimizers
    assert {"Adam", "AdamW", "RMSprop", "SGD", "Adagrad", "Nadam", "Lion"} <= set(names)
    for name in names:
        optimizer = make_optimizer({name: {"learning_rate": 0.01}}, ("compile", "optimizer"))
        assert type(optimizer).__name__ == name
        assert float(optimizer.learning_rate) == pytest.approx(0.01)


def test_optimizer_by_lowercase_name() -> None:
    assert type(make_optimizer("rmsprop", ("o",))).__name__ == "RMSprop"


def test_layers_resolve_with_kwargs_and_reject_bad_ones() -> None:
    layer = make_layer({"Conv2D": {"filters": 4, "kernel_size": 3}}, ("layers", 0))
    assert isinstance(layer, keras.layers.Conv2D) and layer.filters == 4
    with pytest.raises(ConfigError) as caught:
        make_layer({"Conv2D": {"filtrs": 4, "kernel_size": 3}}, ("layers", 0))
    (issue,) = caught.value.issues
    assert issue.path == ("layers", 0, "Conv2D", "filtrs")
    assert issue.suggestion == "filters"


def test_base_layer_kwargs_are_accepted() -> None:
    layer = make_layer({"Dense": {"units": 2, "name": "head", "trainable": False,
                                  "dtype": "float64"}}, ("l",))
    assert layer.name == "head" and not layer.trainable


def test_unknown_layer_suggests_nearest() -> None:
    with pytest.raises(ConfigError) as caught:
        make_layer({"Conv2d": {"filters": 3}}, ("model", "layers", 1))
    (issue,) = caught.value.issues
    assert issue.suggestion == "Conv2D"
    assert "unknown layer 'Conv2d'" in issue.message


def test_keras_rejecting_a_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        make_layer({"Dropout": {"rate": "lots"}}, ("layers", 3))
    assert caught.value.issues[0].path[:2] == ("layers", 3)


def test_nested_object_specs_become_keras_serialized_objects() -> None:
    layer = make_layer(
        {"Dense": {"units": 3, "kernel_regularizer": {"L2": {"l2": 0.01}},
                   "kernel_initializer": {"HeNormal": {"seed": 1}},
                   "kernel_constraint": {"MaxNorm": {"max_value": 2.0}}}},
        ("l",),
    )
    assert isinstance(layer.kernel_regularizer, keras.regularizers.L2)
    assert isinstance(layer.kernel_initializer, keras.initializers.HeNormal)
    assert isinstance(layer.kernel_constraint, keras.constraints.MaxNorm)


def test_wrapper_layers_take_a_layer_spec() -> None:
    args = keras_arguments({"layer": {"LSTM": {"units": 4}}}, ("l",))
    assert isinstance(args["layer"], keras.layers.LSTM)
    layer = make_layer({"Bidirectional": {"layer": {"LSTM": {"units": 4}}}}, ("l",))
    assert isinstance(layer, keras.layers.Bidirectional)


def test_accepted_kwargs_follows_the_class_chain() -> None:
    accepted = accepted_kwargs(keras.layers.Dense)
    assert {"units", "activation", "name", "dtype", "trainable"} <= accepted


def test_losses_by_function_name_and_by_class_with_kwargs() -> None:
    assert callable(make_loss("sparse_categorical_crossentropy", ("compile", "loss")))
    loss = make_loss({"CategoricalCrossentropy": {"label_smoothing": 0.1}}, ("compile", "loss"))
    assert isinstance(loss, keras.losses.CategoricalCrossentropy)
    with pytest.raises(ConfigError) as caught:
        make_loss({"mse": {"reduction": "sum"}}, ("compile", "loss"))
    assert "takes no arguments" in caught.value.issues[0].message
    with pytest.raises(ConfigError) as caught:
        make_loss("sparse_categorical_crossentropyy", ("compile", "loss"))
    assert caught.value.issues[0].suggestion == "sparse_categorical_crossentropy"


def test_metrics_by_name_stay_strings_and_classes_get_kwargs() -> None:
    assert make_metric("accuracy", ("m",)) == "accuracy"
    assert make_metric("mae", ("m",)) == "mae"
    auc = make_metric({"AUC": {"name": "auc", "curve": "PR"}}, ("m",))
    assert isinstance(auc, keras.metrics.AUC) and auc.name == "auc"
    with pytest.raises(ConfigError) as caught:
        make_metric("acuracy", ("compile", "metrics", 0))
    # the alias compile resolves, not keras.metrics.Accuracy (exact match, wrong for
    # integer labels with a softmax)
    assert caught.value.issues[0].suggestion == "accuracy"


@pytest.mark.parametrize("name", ["EarlyStopping", "ReduceLROnPlateau", "TerminateOnNaN",
                                  "CSVLogger", "TensorBoard", "ModelCheckpoint"])
def test_required_callbacks_resolve(name: str, tmp_path) -> None:
    defaults = {"CSVLogger": {"filename": str(tmp_path / "h.csv")},
                "ModelCheckpoint": {"filepath": str(tmp_path / "m.keras")}}.get(name, {})
    callback = make_callback({name: defaults}, ("callbacks", 0))
    assert type(callback).__name__ == name


def test_callback_bad_kwarg() -> None:
    with pytest.raises(ConfigError) as caught:
        make_callback({"EarlyStopping": {"patiance": 3}}, ("callbacks", 0))
    assert caught.value.issues[0].suggestion == "patience"


@pytest.mark.parametrize("value, says", [
    (float("nan"), "Adam's 'learning_rate' is NaN (.nan), which no argument takes"),
    ("0.01", "Adam's 'learning_rate' is a number (default 0.001), but '0.01' is quoted"),
])
def test_a_nan_or_quoted_number_argument_is_refused_at_its_key(value: object, says: str) -> None:
    """Was: .nan passed validate and failed the run with 'lower the learning rate' advice;
    a quoted number got Keras' 'Received instead: learning_rate=0.01'."""
    with pytest.raises(ConfigError) as caught:
        make_optimizer({"Adam": {"learning_rate": value}}, ("compile", "optimizer"))
    (issue,) = caught.value.issues
    assert issue.path == ("compile", "optimizer", "Adam", "learning_rate")
    assert says in issue.message
    layer = make_layer({"Dense": {"units": 2, "name": "7"}}, ("layers", 0))  # text where text goes
    assert layer.name == "7"


def test_a_mapping_where_a_number_goes_is_refused_at_its_key() -> None:
    """Was: EarlyStopping's patience {Dense: {units: 1}} passed every check and failed at the
    end of an epoch with "'>=' not supported between 'int' and 'dict'" (breaker, round 3)."""
    with pytest.raises(ConfigError) as caught:
        make_callback({"EarlyStopping": {"patience": {"Dense": {"units": 1}}}}, ("callbacks", 0))
    (issue,) = caught.value.issues
    assert issue.path == ("callbacks", 0, "EarlyStopping", "patience")
    assert "EarlyStopping's 'patience' is a number (default 0): a mapping does not fit it" in (
        issue.message)
    # a list may still go where a number is the default (Conv1D's strides: 2 or [2])
    assert make_layer({"Conv1D": {"filters": 2, "kernel_size": 3, "strides": [2]}},
                      ("layers", 0)).strides == (2,)
