"""How deep a model may be: Keras walks a model's graph with one nested Python call per
layer of a path, so a model deeper than Python's recursion limit cannot be built (nor
saved and loaded). kexp says so as a config error at the key that makes the model deep,
before building when every path is too long, else when Keras runs out; never a
RecursionError traceback, never minutes of building layers first."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

import pytest
import yaml

from kexp.config import load_config_text
from kexp.config.schema import ExperimentConfig
from kexp.errors import ConfigError
from kexp.model.graph import check_functional, model_scope, scope_depth

GRAPH = """\
name: deep
data:
  train: {source: npz, path: a.npz, x: features, y: labels}
model:
  functional:
    inputs: {x: {shape: [4]}}
    blocks:
      residual:
        inputs: [x]
        graph:
          - {name: h, layer: {Dense: {units: 4}}, inputs: x}
          - {name: h2, layer: {Dense: {units: 4}}, inputs: h}
          - {name: y, layer: Add, inputs: [x, h2]}
        outputs: [y]
      pair:
        inputs: [x]
        graph:
          - {name: a, layer: {Dense: {units: 4}}, inputs: x}
          - {name: b, block: residual, repeat: 2, inputs: a}
        outputs: [b]
    graph:
      - {name: first, layer: {Dense: {units: 4}}, inputs: x}
      - {name: deep, block: pair, repeat: 3, inputs: first}
      - {name: out, layer: {Dense: {units: 1}}, inputs: deep}
    outputs: [out]
compile: {loss: mse}
"""


def config(text: str = GRAPH, *overrides: str) -> ExperimentConfig:
    return load_config_text(text, overrides=overrides).config


def test_depth_of_a_graph_with_blocks_repeated_and_nested() -> None:
    """pair = Dense + residual x2; residual's shortest path is the Add alone (x -> y), its
    longest Dense, Dense, Add."""
    spec = config().model.functional
    depth = scope_depth(model_scope(spec, ()), spec.blocks, ())
    assert depth.shortest == 1 + 3 * (1 + 2 * 1) + 1
    assert depth.longest == 1 + 3 * (1 + 2 * 3) + 1


def test_a_graph_deeper_than_the_recursion_limit_on_every_path_is_refused_before_building() -> None:
    spec = config(GRAPH, "model.functional.graph[1].repeat=400").model.functional
    started = time.perf_counter()
    (issue,) = [i for i in check_functional(spec, ("model", "functional")) if i.severity == "error"]
    assert time.perf_counter() - started < 5  # the graph alone: no layer is built
    assert issue.path == ("model", "functional", "graph", 1, "repeat")
    assert f"at least {1 + 400 * 3 + 1:,} layers deep on every path" in issue.message
    assert "node 'deep' repeats block 'pair' 400 times" in issue.message
    assert "sub-models" in issue.message  # what to write instead


def test_repeat_is_bounded_in_the_schema() -> None:
    with pytest.raises(ConfigError) as caught:
        config(GRAPH, "model.functional.graph[1].repeat=1001")
    (issue,) = caught.value.issues
    assert issue.path == ("model", "functional", "graph", 1, "repeat")
    assert "less than or equal to 1000" in issue.message


@contextmanager
def recursion_limit(limit: int) -> Iterator[None]:
    """A lower limit, so that a model too deep for Keras is built in a second, not in ten."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


def _sequential(layers: int) -> ExperimentConfig:
    data = yaml.safe_load(GRAPH)
    data["model"] = {"sequential": {"input": {"shape": [4]},
                                    "layers": [{"Dense": {"units": 1}}] * layers}}
    return ExperimentConfig.model_validate(data)


def test_a_model_keras_runs_out_on_is_a_config_error_at_the_model() -> None:
    """A Sequential of more layers than the limit allows: Keras' RecursionError becomes a
    config error (the tester's 1500 Dense layers, at a lower limit)."""
    from kexp.model import build_model

    with recursion_limit(400):
        with pytest.raises(ConfigError) as caught:
            build_model(_sequential(450))
    (issue,) = caught.value.issues
    assert issue.path == ("model", "sequential")
    assert "too deep for Keras (450 layers in one chain)" in issue.message
    assert "Python allows 400 nested calls" in issue.message


def test_a_functional_model_keras_runs_out_on_names_its_longest_path() -> None:
    """Shorter than the limit on one path (the residuals' skips), too deep on another."""
    from kexp.model import build_model

    data = yaml.safe_load(GRAPH)
    # Add takes the long branch first: Keras walks it whole
    data["model"]["functional"]["blocks"]["residual"]["graph"][2]["inputs"] = ["h2", "x"]
    data["model"]["functional"]["graph"][1]["repeat"] = 40
    spec = ExperimentConfig.model_validate(data)
    with recursion_limit(300):
        with pytest.raises(ConfigError) as caught:
            build_model(spec)
    (issue,) = caught.value.issues
    assert issue.path == ("model", "functional")
    assert f"paths of up to {1 + 40 * 7 + 1} layers" in issue.message


def test_a_model_within_the_limit_builds() -> None:
    from kexp.model import build_model

    model = build_model(config(GRAPH, "model.functional.graph[1].repeat=3"))
    assert len(model.layers) > 20
