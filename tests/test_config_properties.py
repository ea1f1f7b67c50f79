"""Property tests: however a good config (the shipped ones, the plugin example with its
custom layer, loss, metric and epoch schedule, the starters) is mangled (keys dropped, renamed
or added, values swapped for anything YAML can hold, Keras arguments given odd values, lines
deleted, characters typed at random, odd --set overrides), ``kexp validate`` and ``kexp train
--print-config`` answer with success or a user error (exit 2) and never with a traceback.

They run the real Typer app in this process (TensorFlow is imported once, by the first
mutated config that passes the schema). Examples are derandomized so CI is repeatable;
integers stay small so that a mutated layer never asks for gigabytes of weights.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st
from typer.testing import CliRunner

from conftest import CONFIGS, REPO
from kexp.cli import app

GOOD = [*sorted(CONFIGS.glob("*.yaml")), CONFIGS / "plugins" / "digits_custom.yaml",
        REPO / "kexp/starter/sequential.yaml", REPO / "kexp/starter/functional.yaml"]


def _anchored(path: Any) -> str:
    """A config's text with its plugin files absolute: mutants are written elsewhere, and a
    plugin that is not found would stop every mutant of a plugin config before Keras."""
    text = path.read_text()
    for entry in (yaml.safe_load(text) or {}).get("plugins", []):
        text = text.replace(f"- {entry}", f"- {path.parent / entry}")
    return text


TEXT = [_anchored(p) for p in GOOD]
RAW = [yaml.safe_load(t) for t in TEXT]
assert any(raw.get("plugins") for raw in RAW)  # custom layer, loss, metric and a schedule too

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-1000, 1000),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.text(max_size=12),
    st.sampled_from(["relu", "Dense", "adam", "npz", "csv", "auto", "max", "accuracy", "x",
                     "${env:HOME}", "${env:KEXP_NOT_SET}", "[", "{a: 1}", "Flatten"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, path + (index,))
    return out


def _parent(root: Any, path: tuple) -> Any:
    for part in path[:-1]:
        root = root[part]
    return root


@st.composite
def mutated(draw: st.DrawFn) -> dict:
    """A good config with one to three structural mutations."""
    config = copy.deepcopy(draw(st.sampled_from(RAW)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(config) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _parent(config, path), path[-1]
        action = draw(st.sampled_from(["delete", "replace", "rename", "insert", "wrap"]))
        if action == "delete":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(values)
        elif action == "wrap":
            parent[key] = [parent[key]]
        elif action == "rename" and isinstance(parent, dict):
            name = str(key)
            new = draw(st.one_of(st.text(min_size=1, max_size=10),
                                 st.just(name[:-1]), st.just(name + "s"), st.just(name.upper())))
            value = parent.pop(key)
            parent[new] = value
        elif action == "insert":
            target = parent[key]
            if isinstance(target, dict):
                target[draw(st.text(min_size=1, max_size=10))] = draw(values)
            elif isinstance(target, list):
                target.insert(draw(st.integers(0, len(target))), draw(values))
    return config


def _no_crash(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception), result.output)
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 2:
        assert "error:" in result.output, result.output
    return result.output


@PROPERTY
@given(config=mutated())
def test_mutated_configs_never_crash(config: dict, tmp_path_factory) -> None:
    path = tmp_path_factory.mktemp("c") / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    _no_crash(["validate", str(path)])


@st.composite
def mangled_text(draw: st.DrawFn) -> str:
    """A good config's text with a line deleted or duplicated, or characters typed in."""
    lines = draw(st.sampled_from(TEXT)).splitlines()
    for _ in range(draw(st.integers(1, 2))):
        index = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "type", "indent"]))
        if action == "delete":
            del lines[index]
        elif action == "duplicate":
            lines.insert(index, lines[index])
        elif action == "indent":
            lines[index] = draw(st.sampled_from([" ", "\t", "   "])) + lines[index]
        else:
            line = lines[index]
            at = draw(st.integers(0, len(line)))
            typed = draw(st.text(alphabet=":-[]{},'\"#&*!|>%@` \tab1", min_size=1, max_size=3))
            lines[index] = line[:at] + typed + line[at:]
        if not lines:
            break
    return "\n".join(lines) + "\n"


@settings(PROPERTY, max_examples=30)
@given(text=mangled_text())
def test_mangled_yaml_never_crashes(text: str, tmp_path_factory) -> None:
    path = tmp_path_factory.mktemp("t") / "config.yaml"
    path.write_text(text)
    _no_crash(["validate", str(path)])


keys = st.sampled_from(["train.epochs", "train", "data.batch_size", "callbacks[0]",
                        "callbacks[-1].EarlyStopping.patience", "callbacks[]", "callbacks[9]",
                        "model.sequential.layers[1]", "compile.optimizer", "x", "a.b.c",
                        "data.validation.split", "seed", "hardware", "[0]", "", "."])
set_texts = st.builds(
    lambda op, key, eq, value: f"{op}{key}{eq}{value}",
    st.sampled_from(["", "+", "~", "++"]), keys | st.text(max_size=12),
    st.sampled_from(["=", "", "=="]), st.text(max_size=12) | st.sampled_from(
        ["5", "[1, 2]", "{Adam: {}}", "null", "[", "${env:KEXP_NOT_SET}", "3e-4"]),
)


@PROPERTY
@given(sets=st.lists(set_texts, min_size=1, max_size=3))
def test_random_overrides_never_crash(sets: list[str]) -> None:
    args = ["train", str(CONFIGS / "iris_mlp.yaml"), "--print-config"]
    for text in sets:
        args += ["--set", text]
    output = _no_crash(args)
    assert "error:" in output or output.startswith("# resolved config")


# Keras-level: the schema passes, the names and arguments inside Keras objects are mangled.
KWARGS = ["units", "filters", "kernel_size", "strides", "padding", "rate", "activation",
          "momentum", "patience", "monitor", "mode", "learning_rate", "pool_size", "axis",
          "use_bias", "kernel_initializer", "kernel_regularizer", "factor", "from_logits",
          "scale", "data_format", "dtype", "name",
          # the plugin example's own layer, loss and metric, and its schedule in epochs
          "ratio", "gamma", "num_classes", "warmup_epochs", "decay_epochs", "decay_epoch",
          "warmup_target", "boundary_epochs"]
kwarg_values = st.one_of(
    scalars, st.lists(st.integers(-3, 40), max_size=3),
    st.sampled_from([{"L2": {"l2": 0.1}}, {"L2": {"l3": 1}}, {"Zeros": {}}, {"Nope": None},
                     "glorot_uniform", "valid", "same", "causal", "channels_first", "float16",
                     "string", "softmax"]),
)


def _keras_objects(node: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every ``{ClassName: {kwargs}}`` in a config."""
    out = []
    if isinstance(node, dict):
        if len(node) == 1:
            ((key, value),) = node.items()
            if isinstance(key, str) and key[:1].isupper() and isinstance(value, dict):
                out.append(path + (key,))
        for key, value in node.items():
            out += _keras_objects(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _keras_objects(value, path + (index,))
    return out


@st.composite
def kwargs_mutated(draw: st.DrawFn, pool: list[dict] = RAW) -> dict:
    config = copy.deepcopy(draw(st.sampled_from(pool)))
    for _ in range(draw(st.integers(1, 2))):
        node = config
        for part in draw(st.sampled_from(_keras_objects(config))):
            node = node[part]
        node[draw(st.sampled_from(KWARGS + list(node)))] = draw(kwarg_values)
    return config


@settings(PROPERTY, max_examples=25)
@given(config=kwargs_mutated())
def test_mangled_keras_arguments_never_crash(config: dict, tmp_path_factory) -> None:
    path = tmp_path_factory.mktemp("k") / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    _no_crash(["validate", str(path)])


PLUGIN_CONFIGS = [raw for raw in RAW if raw.get("plugins")]


@settings(PROPERTY, max_examples=15)
@given(config=kwargs_mutated(PLUGIN_CONFIGS))
def test_mangled_plugin_component_arguments_never_crash(config: dict, tmp_path_factory) -> None:
    """The same for the plugin example: its custom layer, loss and metric and its schedule
    given in epochs, imported from the plugin file and checked against their signatures."""
    path = tmp_path_factory.mktemp("p") / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    _no_crash(["validate", str(path)])
