"""Numbers in a config: kexp's own integer and float keys are strict (no booleans, no
quoted numbers) and bounded by what TensorFlow and Keras hold; class weights are class
indices and non-negative weights; a true/false where Keras wants a number is refused.
A config that ``extends`` another is partial, and its JSON Schema says so."""

from __future__ import annotations

import json
import re
import typing
from typing import Any, Iterator

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, Strict

from conftest import REPO
from kexp.config import load_config_text
from kexp.config.jsonschema import json_schema
from kexp.config.schema import ExperimentConfig
from kexp.config.schema.common import INT32_MAX, INT64_MAX
from kexp.errors import ConfigError

CONFIG = """\
name: t
seed: 3
data:
  train: {source: npz, path: a.npz, x: images, y: labels}
  validation: {split: 0.2}
  batch_size: 32
model:
  sequential:
    input: {shape: [8, 8, 1]}
    layers:
      - Flatten: {}
      - Dense: {units: 10, activation: softmax}
compile:
  loss: sparse_categorical_crossentropy
train: {epochs: 2}
"""


def issues(*overrides: str) -> list:
    with pytest.raises(ConfigError) as caught:
        load_config_text(CONFIG, overrides=overrides)
    return caught.value.issues


def valid(*overrides: str) -> ExperimentConfig:
    return load_config_text(CONFIG, overrides=overrides).config


# ------------------------------------------------------------------ strict types

def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> Iterator[type[BaseModel]]:
    if model in seen:
        return
    seen.add(model)
    yield model
    for field in model.model_fields.values():
        for arg in _flatten(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                yield from _models(arg, seen)


def _flatten(annotation: Any) -> Iterator[Any]:
    yield annotation
    for arg in typing.get_args(annotation):
        yield from _flatten(arg)


def _lax_numbers(annotation: Any, metadata: list[Any]) -> list[str]:
    """``int``/``float``/``bool`` types reachable in ``annotation`` that lack pydantic's
    Strict."""
    found = []
    if annotation in (int, float, bool):
        if not any(isinstance(m, Strict) for m in metadata):
            found.append(annotation.__name__)
        return found
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        return _lax_numbers(inner, list(extra))
    for arg in typing.get_args(annotation):
        if not isinstance(arg, type) or not issubclass(arg, BaseModel):
            found += _lax_numbers(arg, [])
    return found


def test_every_number_and_boolean_of_the_schema_is_strict() -> None:
    """A new int, float or bool field must use kexp.config.schema.common's Int/Float/Bool: a
    bare int takes ``true`` as 1 and ``"16"`` as 16, a bare bool 1 and "yes" as true."""
    lax = [
        f"{model.__name__}.{name}: {kind}"
        for model in _models(ExperimentConfig, set())
        for name, field in model.model_fields.items()
        for kind in _lax_numbers(field.annotation, list(field.metadata))
    ]
    assert lax == []


@pytest.mark.parametrize("override, path, gist", [
    ("train.epochs=true", ("train", "epochs"), "expected an integer"),
    ('train.epochs="1"', ("train", "epochs"), "expected an integer"),
    ("train.epochs=1.0", ("train", "epochs"), "expected an integer"),
    ('data.batch_size="16"', ("data", "batch_size"), "expected an integer"),
    ('seed="7"', ("seed",), "expected an integer"),
    ("model.sequential.input.shape=[8, 8, true]",
     ("model", "sequential", "input", "shape", 2), "expected an integer"),
    ("data.validation.split=true", ("data", "validation", "split"), "expected a number"),
    ('+compile.loss_weights=["1"]', ("compile", "loss_weights", 0), "expected a number"),
    ("+freeze={layers: [true]}", ("freeze", "layers", 0), "expected"),
    ("deterministic=1", ("deterministic",), "expected true or false"),
    ('data.shuffle="no"', ("data", "shuffle"), "expected true or false"),
    ("+hardware.jit_compile=0", ("hardware", "jit_compile"), "expected true or false"),
    ('+data.cache="on"', ("data", "cache"), "must be one of"),
])
def test_booleans_and_quoted_numbers_are_refused(override: str, path: tuple, gist: str) -> None:
    (issue,) = issues(override)
    assert issue.path == path
    assert gist in issue.message


def test_an_integer_is_a_number_where_a_float_goes() -> None:
    config = valid("+compile.loss_weights=[1]", "+freeze={layers: [0], fine_tune_learning_rate: 1}")
    assert config.compile.loss_weights == [1.0]
    assert config.freeze.fine_tune_learning_rate == 1.0


@pytest.mark.parametrize("key, largest", [
    ("train.epochs", INT64_MAX),
    ("+train.steps_per_epoch", INT64_MAX),
    ("data.batch_size", INT32_MAX),
    ("+hardware.steps_per_execution", INT32_MAX),
    ("+data.shuffle_buffer", 100_000_000),
])
def test_integers_are_bounded_by_what_tensorflow_holds(key: str, largest: int) -> None:
    """``batch_size: 10**20`` passed the schema, then crashed TF after the run directory
    existed ("Can't convert Python sequence with out-of-range integer to Tensor")."""
    assert valid(f"{key}={largest}")
    (issue,) = issues(f"{key}={largest + 1}")
    assert issue.path == tuple(key.lstrip("+").split("."))
    assert re.search(r"less than or equal to|out of the range of integers", issue.message)


def test_beyond_int64_the_message_says_so() -> None:
    (issue,) = issues(f"train.epochs={10**20}")
    assert "int64" in issue.message and issue.value == 10**20


# ------------------------------------------------------------------ class weights

def test_class_weights_are_class_indices_and_non_negative_weights() -> None:
    assert valid("+train.class_weight={0: 1, 1: 2.5}").train.class_weight == {0: 1.0, 1: 2.5}
    (issue,) = issues("+train.class_weight={0: 1, 1: -0.5}")
    assert issue.path == ("train", "class_weight", 1) and "greater than or equal to 0" in str(issue)
    (issue,) = issues("+train.class_weight={0: 1, -1: 2}")
    assert issue.path == ("train", "class_weight", -1)
    assert "each key here should be greater than or equal to 0" in issue.message
    (issue,) = issues(f"+train.class_weight={{{INT32_MAX + 1}: 1}}")
    assert "each key here" in issue.message
    (issue,) = issues("+train.class_weight={0: .inf}")
    assert "finite" in issue.message
    (issue,) = issues("+train.class_weight={true: 1}")
    assert "each key here must be an integer" in issue.message and issue.value is True


def test_class_weight_keys_may_be_spelled_as_json_does() -> None:
    """JSON object keys are text: a config written as JSON gives ``"0"``."""
    data = yaml.safe_load(CONFIG)
    data["train"]["class_weight"] = {"0": 1.0, "2": 3.0}
    assert ExperimentConfig.model_validate(data).train.class_weight == {0: 1.0, 2: 3.0}


def test_class_weight_errors_point_at_the_line_of_their_key() -> None:
    text = CONFIG.replace("train: {epochs: 2}", "train:\n  class_weight:\n    0: 1.0\n    1: -2.0")
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    (issue,) = caught.value.issues
    assert issue.line == text.splitlines().index("    1: -2.0") + 1


# ------------------------------------------------------------------ JSON Schema and extends

@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _readme_child() -> dict:
    """The README's example of a config built on another with ``extends``."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```yaml\n(# configs/digits_small\.yaml\n.*?)```", readme, re.S)
    assert block, "the README's extends example moved: update this test"
    return yaml.safe_load(block.group(1))


def test_a_child_config_is_partial_for_the_json_schema(validator) -> None:
    """A child config leaves data, model, compile.loss, ... to its base: none is missing."""
    child = _readme_child()
    assert "extends" in child and "data" not in child
    assert [e.message for e in validator.iter_errors(child)] == []
    deeper = {"extends": "base.yaml", "data": {"train": {"path": "other.npz"}, "batch_size": 64},
              "model": {"functional": {"graph+": [{"name": "x", "layer": "Flatten",
                                                  "inputs": "pixels"}]}}}
    assert [e.message for e in validator.iter_errors(deeper)] == []


def test_a_child_config_is_still_checked_for_what_it_says(validator) -> None:
    child = _readme_child()
    child["train"] = {"epochs": True}
    child["data"] = {"batch_size": 0, "shufle": True}
    messages = [(list(e.absolute_path), e.message) for e in validator.iter_errors(child)]
    assert any(path == ["train", "epochs"] for path, _ in messages), messages
    assert any(path == ["data", "batch_size"] for path, _ in messages), messages
    assert any("shufle" in message for _, message in messages), messages


def test_without_extends_required_keys_are_required(validator) -> None:
    child = _readme_child()
    del child["extends"]
    missing = {m for e in validator.iter_errors(child)
               for m in re.findall(r"'(\w+)' is a required property", e.message)}
    assert {"data", "model", "loss"} <= missing


def test_the_json_schema_bounds_integers_like_validation(validator) -> None:
    config = yaml.safe_load(CONFIG)
    config["data"]["batch_size"] = INT32_MAX + 1
    config["train"]["epochs"] = INT64_MAX + 1
    config["data"]["shuffle_buffer"] = 0
    paths = {tuple(e.absolute_path) for e in validator.iter_errors(config)}
    assert paths == {("data", "batch_size"), ("data", "shuffle_buffer"), ("train", "epochs")}
    text = json.dumps(json_schema())
    assert '"gt":' not in text and '"le":' not in text  # pydantic's names, which JSON ignores


# ------------------------------------------------------------------ Keras arguments

def test_a_boolean_is_refused_where_keras_wants_a_number() -> None:
    """Python takes True as 1 and Keras does not check: ``units: true`` made one unit."""
    from kexp.resolve import make_callback, make_layer

    with pytest.raises(ConfigError) as caught:
        make_layer({"Dense": {"units": True}}, ("layers", 0))
    (issue,) = caught.value.issues
    assert issue.path == ("layers", 0, "Dense", "units") and "required argument" in issue.message
    with pytest.raises(ConfigError) as caught:
        make_callback({"EarlyStopping": {"patience": True, "min_delta": False}}, ("callbacks", 0))
    assert [i.path[-1] for i in caught.value.issues] == ["patience", "min_delta"]
    with pytest.raises(ConfigError) as caught:
        make_layer({"Dense": {"units": 3, "kernel_regularizer": {"L2": {"l2": True}}}}, ("l",))
    assert caught.value.issues[0].path == ("l", "Dense", "kernel_regularizer", "L2", "l2")


def test_booleans_still_go_where_keras_takes_a_switch() -> None:
    from kexp.resolve import make_callback, make_layer
    from kexp.tf import keras

    assert make_layer({"Dense": {"units": 3, "use_bias": False}}, ("l",)).use_bias is False
    assert make_callback({"EarlyStopping": {"restore_best_weights": True}}, ("c",))

    class Flagged(keras.layers.Layer):  # a plugin's own required argument: its business
        def __init__(self, flag, **kwargs):
            super().__init__(**kwargs)
            self.flag = flag

    from kexp.resolve import check_kwargs

    check_kwargs(Flagged, {"flag": True}, ("l",), "Flagged")
