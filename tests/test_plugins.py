"""Plugins in-process: every kind of custom component used by name, trained, saved as .keras
and .h5, and reloaded with kexp's safe loader; name lookup; import errors; layer options;
freezing a backbone for the first epochs. (The CLI and a fresh process: test_plugins_cli.py.)
"""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, shipped, write_config
from kexp.config import load_config
from kexp.config.loader import load_config_text
from kexp.errors import ConfigError, UserError

KINDS = REPO / "tests" / "plugins" / "kinds.py"


def _train(tmp_path: Path, config: dict, name: str = "c.yaml"):
    from kexp.training.run import train

    return train(load_config(write_config(tmp_path / name, config)), output_root=tmp_path / "runs")


def _iris(tmp_path: Path, **overrides: object) -> dict:
    config = shipped("iris_mlp.yaml", train={"epochs": 1}, callbacks=[],
                     output={"root": str(tmp_path / "runs"), "tensorboard": False})
    config["checkpoint"] = {"save_best": False, "save_last": False}
    config.update(overrides)
    return config


EVERY_KIND = {
    "plugins": [str(KINDS)],
    "model": {"sequential": {"input": {"shape": [4]}, "layers": [
        {"Dense": {"units": 8, "name": "hidden", "activation": "soft_clip",
                   "kernel_initializer": {"ScaledOnes": {"value": 0.1}},
                   "bias_initializer": "HalfInit",
                   "kernel_regularizer": {"SumOfSquares": {"factor": 0.001}},
                   "kernel_constraint": {"ClipTo": {"limit": 2.0}}}},
        {"Scale": {"start": 0.5}},
        {"Dense": {"units": 3, "activation": "softmax"}},
    ]}},
    "compile": {
        "optimizer": {"DampedSGD": {"damping": 0.5, "learning_rate": {
            "LinearWarmup": {"peak": 0.05, "warmup_epochs": 2}}}},
        "loss": {"WeightedSparseCrossentropy": {"weights": [1.0, 2.0, 1.0]}},
        "metrics": ["accuracy", "MeanConfidence", "top_probability"],
    },
    "callbacks": [{"EpochRecorder": {"layer": "hidden", "key": "every-kind"}}],
}


def test_every_kind_by_name_survives_keras_and_h5(tmp_path: Path) -> None:
    """Layer, loss, metric (class and function), optimizer, schedule (in epochs), initializer
    (also undecorated), regularizer, constraint, activation by short name; callback runs."""
    from kexp.runs import load_model, resolve_target

    run = _train(tmp_path, _iris(tmp_path, **copy.deepcopy(EVERY_KIND)))
    import kinds  # imported by the run (a file plugin is named after its stem)

    assert kinds.RECORDED["every-kind"], "the plugin's callback did not run"
    steps_per_epoch = int(np.ceil(96 / 16))  # iris: 120 train rows, 20% validation
    schedule = run.model.optimizer.get_config()["learning_rate"]
    assert schedule["registered_name"] == "kinds_test>LinearWarmup"
    assert schedule["config"]["warmup_steps"] == 2 * steps_per_epoch

    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    y = np.array([0, 1, 2, 1, 0])
    expected = run.model.predict(x, verbose=0)
    expected_eval = run.model.evaluate(x, y, return_dict=True, verbose=0)
    assert set(expected_eval) >= {"loss", "accuracy", "mean_confidence", "top_probability"}
    target = resolve_target(run.directory)
    assert target.safe_mode and target.plugin_notes == ()
    for fmt in ("keras", "h5"):
        model = load_model(run.directory / f"model.{fmt}")  # safe mode on
        hidden = model.get_layer("hidden")
        assert type(model.layers[1]) is kinds.Scale, fmt
        assert hidden.activation is kinds.soft_clip, fmt
        assert isinstance(hidden.kernel_initializer, kinds.ScaledOnes), fmt
        assert isinstance(hidden.bias_initializer, kinds.HalfInit), fmt
        assert isinstance(hidden.kernel_regularizer, kinds.SumOfSquares), fmt
        assert isinstance(hidden.kernel_constraint, kinds.ClipTo), fmt
        assert isinstance(model.optimizer, kinds.DampedSGD) and model.optimizer.damping == 0.5
        assert model.optimizer.get_config()["learning_rate"]["config"]["warmup_steps"] == 12
        assert isinstance(model.loss, kinds.WeightedSparseCrossentropy), fmt
        assert model.loss.weights == [1.0, 2.0, 1.0]
        np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-6)
        got = model.evaluate(x, y, return_dict=True, verbose=0)
        for key, value in expected_eval.items():
            assert got[key] == pytest.approx(value, rel=1e-5), (fmt, key)


def test_short_names_are_found_and_ambiguous_ones_refused() -> None:
    from kexp.resolve import keras_arguments, lookup, make_loss
    from kexp.tf import keras

    @keras.saving.register_keras_serializable("pkg_one")
    class TwinLoss(keras.losses.MeanSquaredError):
        pass

    assert lookup("loss", "TwinLoss", ("compile", "loss")) is TwinLoss
    assert lookup("loss", "pkg_one>TwinLoss", ("compile", "loss")) is TwinLoss
    assert isinstance(make_loss("TwinLoss", ("compile", "loss")), TwinLoss)  # bare name: instance
    with pytest.raises(ConfigError, match="not a registered|unknown layer"):
        lookup("layer", "TwinLoss", ("model",))  # a loss is not a layer
    # a nested {Name: kwargs} under any other argument: Keras' serialized form, full name
    arguments = keras_arguments({"inner": {"TwinLoss": {}}, "reg": {"L2": {"l2": 0.1}}}, ("p",))
    assert arguments["inner"] == {"class_name": "pkg_one>TwinLoss", "config": {}}
    assert arguments["reg"] == {"class_name": "L2", "config": {"l2": 0.1}}

    @keras.saving.register_keras_serializable("pkg_two", name="TwinLoss")
    class OtherTwin(keras.losses.MeanSquaredError):
        pass

    with pytest.raises(ConfigError) as caught:
        lookup("loss", "TwinLoss", ("compile", "loss"))
    assert "ambiguous" in str(caught.value) and "pkg_one>TwinLoss" in str(caught.value)
    assert lookup("loss", "pkg_two>TwinLoss", ("compile", "loss")) is OtherTwin


def test_undecorated_components_are_registered_under_the_module_name(tmp_path: Path) -> None:
    from kexp.plugins import import_plugin
    from kexp.tf import keras

    plugin = tmp_path / "undecorated_kit.py"
    plugin.write_text(textwrap.dedent("""
        import keras

        class Doubler(keras.layers.Layer):
            def call(self, x):
                return 2 * x

        def halve(x):
            return x / 2

        def _private(x):
            return x
    """))
    record = import_plugin(str(plugin))
    assert record.module == "undecorated_kit" and len(record.sha256) == 64
    assert keras.saving.get_registered_object("undecorated_kit>Doubler").__name__ == "Doubler"
    assert keras.saving.get_registered_object("undecorated_kit>halve").__name__ == "halve"
    assert keras.saving.get_registered_object("undecorated_kit>_private") is None


def _plugin_issue(tmp_path: Path, body: str, entry: str = "broken.py") -> str:
    from kexp.training.run import prepare

    (tmp_path / "broken.py").write_text(textwrap.dedent(body))
    config = _iris(tmp_path, plugins=[entry])
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    with pytest.raises(ConfigError) as caught:
        prepare(loaded)
    (issue,) = caught.value.issues
    assert issue.path == ("plugins", 0)
    assert issue.line is not None  # the YAML line of the entry
    return str(issue)


def test_plugin_import_errors_name_the_entry_and_the_plugin_line(tmp_path: Path) -> None:
    text = _plugin_issue(tmp_path, "x = 1\ny = undefined_name\n")
    assert "NameError" in text and "broken.py, line 2" in text
    text = _plugin_issue(tmp_path, "def f(:\n")
    assert "SyntaxError: invalid syntax (broken.py, line 1)" in text
    assert text.count("line 1") == 1, text  # the location once, not twice
    text = _plugin_issue(tmp_path, "if True:\nx = 1\n")
    assert "IndentationError: expected an indented block" in text
    assert text.count("(broken.py, line 2)") == 1, text
    text = _plugin_issue(tmp_path, "import no_such_package_kexp\n")
    assert "imports 'no_such_package_kexp', which is not installed" in text
    assert "plugin file not found" in _plugin_issue(tmp_path, "", entry="missing.py")
    text = _plugin_issue(tmp_path, "", entry="no_such_module_kexp.layers")
    assert "no module named 'no_such_module_kexp.layers'" in text


def test_a_module_plugin_next_to_the_config_is_imported_and_recorded(tmp_path: Path) -> None:
    from kexp.plugins import import_config_plugins

    package = tmp_path / "lab_kit_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "acts.py").write_text("def lab_act(x):\n    return x\n")
    config = _iris(tmp_path, plugins=["lab_kit_pkg.acts"])
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    (record,) = import_config_plugins(loaded)
    assert record.entry == "lab_kit_pkg.acts" and record.path == str(package / "acts.py")
    assert record.search_path == str(tmp_path)


LAYER_OPTIONS = """
name: layer-options
data: {train: {source: npz, path: x.npz}}
model:
  sequential:
    input: {shape: [4]}
    layers:
      - Dense: {units: 3, activation: {LeakyReLU: {negative_slope: 0.2}},
                kernel_initializer: {HeNormal: {seed: 1}}, bias_initializer: zeros,
                kernel_regularizer: {L1L2: {l1: 0.01, l2: 0.02}},
                activity_regularizer: l2, bias_constraint: {MaxNorm: {max_value: 2}},
                kernel_constraint: non_neg, trainable: false}
      - Dense: {units: 2, activation: gelu}
compile: {loss: mse}
"""


def test_layer_options_by_name_and_with_arguments() -> None:
    from kexp.model import build_model
    from kexp.tf import keras

    loaded = load_config_text(LAYER_OPTIONS)
    model = build_model(loaded.config)
    first, second = model.layers
    assert isinstance(first.activation, keras.layers.LeakyReLU)
    assert first.activation.negative_slope == pytest.approx(0.2)
    assert isinstance(first.kernel_initializer, keras.initializers.HeNormal)
    assert isinstance(first.kernel_regularizer, keras.regularizers.L1L2)
    assert first.kernel_regularizer.l2 == pytest.approx(0.02)
    assert isinstance(first.activity_regularizer, keras.regularizers.L2)
    assert isinstance(first.bias_constraint, keras.constraints.MaxNorm)
    assert isinstance(first.kernel_constraint, keras.constraints.NonNeg)
    assert first.trainable is False and second.trainable is True
    assert second.activation is keras.activations.gelu
    assert len(model.trainable_weights) == 2  # only the second layer's


@pytest.mark.parametrize("value, fragment", [
    ("{leaky_relu: {negative_slope: 0.2}}", "use a class instead (e.g. LeakyReLU"),
    ("relux", "unknown activation 'relux'"),
    ("{L2: {l3: 0.1}}", "L2 takes no argument 'l3'"),
])
def test_layer_option_mistakes_are_config_errors(value: str, fragment: str) -> None:
    from kexp.model import build_model

    key = "kernel_regularizer" if "L2" in value else "activation"
    text = LAYER_OPTIONS.replace("activation: gelu", f"{key}: {value}")
    with pytest.raises(ConfigError) as caught:
        build_model(load_config_text(text).config)
    assert fragment in str(caught.value)
    assert caught.value.issues[0].path[:5] == ("model", "sequential", "layers", 1, "Dense")


def test_frozen_backbone_then_fine_tuned(tmp_path: Path) -> None:
    """freeze.epochs=1 of 3: the backbone does not move in epoch 1, moves after; one history."""
    config = _iris(tmp_path, plugins=[str(KINDS)])
    config["model"]["sequential"]["layers"] = [
        {"Dense": {"units": 16, "activation": "relu", "name": "backbone_1"}},
        {"Dense": {"units": 8, "activation": "relu", "name": "backbone_2", "trainable": False}},
        {"Dense": {"units": 3, "activation": "softmax", "name": "head"}},
    ]
    config["train"] = {"epochs": 3}
    config["freeze"] = {"layers": ["backbone_*"], "epochs": 1, "fine_tune_learning_rate": 0.001}
    config["callbacks"] = [{"EpochRecorder": {"layer": "backbone_1", "key": "freeze"}},
                           {"EpochRecorder": {"layer": "head", "key": "head"}}]
    from kexp.training.run import prepare

    _, _, model = prepare(load_config(write_config(tmp_path / "f.yaml", config)))
    assert [l.trainable for l in model.layers] == [False, False, True]
    start = float(np.sum(model.get_layer("backbone_1").kernel.numpy()))

    run = _train(tmp_path, config, "f.yaml")
    import kinds

    backbone, head = kinds.RECORDED["freeze"], kinds.RECORDED["head"]
    assert len(backbone) == 3 and len(run.history["loss"]) == 3
    # same seed, same initial weights: epoch 1 leaves the frozen backbone as initialised
    assert backbone[0] == pytest.approx(start, abs=1e-6)
    assert backbone[1] != pytest.approx(backbone[0], abs=1e-6)  # fine-tuned in stage 2
    assert head[0] != pytest.approx(head[1], abs=1e-6)
    layers = {l.name: l for l in run.model.layers}
    assert layers["backbone_1"].trainable and not layers["backbone_2"].trainable  # user's flag kept
    assert float(np.asarray(run.model.optimizer.learning_rate)) == pytest.approx(0.001)
    history = (run.directory / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1", "2"]


@pytest.mark.parametrize("freeze, fragment, path", [
    ({"layers": ["nothing_*"], "epochs": 1}, "matches no layer", ("freeze", "layers", 0)),
    ({"layers": [0], "epochs": 5}, "frozen for all 2 epochs", ("freeze", "epochs")),
    # was: a run that trained nothing, exit 0
    ({"layers": ["*"]}, "hold every trainable weight of the model", ("freeze", "layers")),
])
def test_freeze_mistakes(tmp_path: Path, freeze: dict, fragment: str, path: tuple) -> None:
    from kexp.training.run import prepare

    config = _iris(tmp_path, freeze=freeze, train={"epochs": 2})
    with pytest.raises(ConfigError) as caught:
        prepare(load_config(write_config(tmp_path / "c.yaml", config)))
    issue = next(i for i in caught.value.issues if i.path == path)
    assert fragment in str(issue) and issue.line is not None


def test_a_model_with_an_unregistered_component_gets_a_clear_error(tmp_path: Path) -> None:
    from kexp.runs import load_model
    from kexp.tf import keras

    @keras.saving.register_keras_serializable("vanishing")
    class Vanishing(keras.layers.Layer):
        def call(self, x):
            return x

    model = keras.Sequential([keras.Input((2,)), Vanishing()])
    model.save(tmp_path / "m.keras")
    keras.saving.get_custom_objects().pop("vanishing>Vanishing")
    with pytest.raises(UserError) as caught:
        load_model(tmp_path / "m.keras")
    assert "Vanishing" in str(caught.value) and "plugin" in str(caught.value)
