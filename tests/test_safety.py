"""Nothing runs code from a config or a model file unless the user opts in: YAML python tags,
Lambda layers written as source, serialized code in a config, and Keras' safe mode on load."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_user_error, cli, shipped, write_config
from kexp.config import load_config
from kexp.config.yaml_io import load_text
from kexp.errors import ConfigError, UserError


def test_yaml_python_tags_are_refused_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = f"name: x\nseed: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(ConfigError) as caught:
        load_text(text, "c.yaml")
    message = str(caught.value)
    assert "Python tags are refused" in message and "c.yaml:2" in message
    assert not marker.exists()
    with pytest.raises(ConfigError, match="Python tags are refused"):
        load_text("f: !!python/name:os.system\n", "c.yaml")


def _lambda_config(tmp_path: Path, function: str, **top: object) -> dict:
    config = shipped("iris_mlp.yaml", train={"epochs": 1}, callbacks=[],
                     output={"root": str(tmp_path / "runs"), "tensorboard": False,
                             "formats": ["keras", "h5"]})
    config["checkpoint"] = {"save_best": False, "save_last": False}
    config["model"]["sequential"]["layers"].insert(0, {"Lambda": {"function": function}})
    config.update(top)
    return config


def test_a_lambda_written_as_source_is_refused_through_the_cli(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", _lambda_config(tmp_path, "lambda x: x / 10"))
    done = cli(["validate", config])
    assert_user_error(done, "model.sequential.layers[0].Lambda.function", "refused",
                      "stores it as Python bytecode", "allow_unsafe_deserialization: true",
                      "plugin")
    assert not (tmp_path / "runs").exists()


def test_serialized_code_in_a_config_is_refused(tmp_path: Path) -> None:
    from kexp.training.run import prepare

    config = _lambda_config(tmp_path, "lambda x: x")
    del config["model"]["sequential"]["layers"][0]
    config["model"]["sequential"]["layers"][0]["Dense"]["activation"] = {
        "class_name": "__lambda__", "config": {"value": "ignored"}}
    with pytest.raises(ConfigError) as caught:
        prepare(load_config(write_config(tmp_path / "c.yaml", config)))
    issue = caught.value.issues[0]
    assert issue.path == ("model", "sequential", "layers", 0, "Dense", "activation")
    assert "serialized Python code" in issue.message and issue.line is not None


def test_a_lambda_of_a_plugin_function_is_safe_and_reloads_in_safe_mode(tmp_path: Path) -> None:
    from kexp.runs import load_model
    from kexp.training.run import train

    plugin = tmp_path / "lambda_fns.py"
    plugin.write_text(textwrap.dedent("""
        import keras

        @keras.saving.register_keras_serializable("lambda_fns")
        def tenth(x):
            return x / 10
    """))
    config = _lambda_config(tmp_path, "tenth", plugins=[str(plugin)])
    run = train(load_config(write_config(tmp_path / "c.yaml", config)))
    x = np.ones((2, 4), "float32")
    for fmt in ("keras", "h5"):
        model = load_model(run.directory / f"model.{fmt}")  # safe mode on: the name is saved
        assert model.layers[0].function.__name__ == "tenth"
        np.testing.assert_allclose(model.predict(x, verbose=0), run.model.predict(x, verbose=0))


def test_opted_in_lambda_trains_and_only_its_run_loads_unsafely(tmp_path: Path) -> None:
    from kexp.evaluation import evaluate
    from kexp.runs import load_model, resolve_target
    from kexp.training.run import train

    config = _lambda_config(tmp_path, "lambda x: x / 10", allow_unsafe_deserialization=True)
    run = train(load_config(write_config(tmp_path / "c.yaml", config)))
    for fmt in ("keras", "h5"):
        with pytest.raises(UserError) as caught:  # the default: safe mode refuses the bytecode
            load_model(run.directory / f"model.{fmt}")
        message = str(caught.value)
        assert "refused to load" in message and "allow_unsafe_deserialization" in message
    target = resolve_target(run.directory)
    assert target.safe_mode is False  # the run's config opted in
    x = np.ones((2, 4), "float32")
    reloaded = load_model(target.model_file, safe_mode=target.safe_mode)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), run.model.predict(x, verbose=0))
    result = evaluate(run.directory)  # kexp evaluate takes the opt-in from the run
    assert result["metrics"]["loss"] == pytest.approx(run.test_metrics["loss"], rel=1e-5)


def test_a_model_file_with_bytecode_is_refused_by_default(tmp_path: Path) -> None:
    from kexp.runs import load_model
    from kexp.tf import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x * 2)])
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(UserError, match="holds Python bytecode"):
        load_model(tmp_path / "lambda.keras")


def test_opted_in_source_sees_only_builtins(tmp_path: Path) -> None:
    """What a reloaded Lambda sees too: a name from the config's module would break on load."""
    from kexp.resolve import make_layer
    from kexp.safety import unsafe_allowed

    with unsafe_allowed(True):
        layer = make_layer({"Lambda": {"function": "lambda x: abs(x) * 2"}}, ("layers", 0))
        assert float(layer(np.array([-1.5], "float32"))[0]) == 3.0
        with pytest.raises(ConfigError, match="not valid Python"):
            make_layer({"Lambda": {"function": "lambda x: x +"}}, ("layers", 0))
    with pytest.raises(ConfigError, match="refused"):
        make_layer({"Lambda": {"function": "lambda x: x"}}, ("layers", 0))
