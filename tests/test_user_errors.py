"""User mistakes end with a clear message naming the key (and YAML line), exit code 2 and no
traceback; --debug shows the traceback; no run directory is left behind by a bad config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import DATA, assert_user_error, cli, shipped, write_config


def _config(tmp_path: Path, **overrides: object) -> Path:
    data = shipped("digits_cnn.yaml", train={"epochs": 1}, callbacks=[],
                   output={"root": str(tmp_path / "experiments")}, **overrides)
    return write_config(tmp_path / "c.yaml", data)


def _line_of(path: Path, text: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(text)


def test_missing_config_file(tmp_path) -> None:
    assert_user_error(cli(["train", tmp_path / "nope.yaml"]), "config file not found", "nope.yaml")


def test_yaml_syntax_error_names_the_line(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ndata:\n  train: {source: npz\n  batch_size: 3\n")
    assert_user_error(cli(["train", path]), "YAML syntax error", f"{path}:")


def test_wrong_type_names_key_and_line(tmp_path) -> None:
    path = _config(tmp_path)
    text = path.read_text().replace("epochs: 1", "epochs: one")
    path.write_text(text)
    done = cli(["train", path])
    assert_user_error(done, "train.epochs", f"c.yaml:{_line_of(path, 'epochs: one')}", "'one'")


def test_unknown_layer_names_key_and_suggests(tmp_path) -> None:
    config = shipped("digits_cnn.yaml")
    layers = config["model"]["sequential"]["layers"]
    layers[1] = {"Conv2d": layers[1]["Conv2D"]}
    path = _config(tmp_path, model=config["model"])
    done = cli(["train", path])
    assert_user_error(done, "model.sequential.layers[1]", "unknown layer 'Conv2d'",
                      "did you mean 'Conv2D'")
    assert not (tmp_path / "experiments").exists(), "a bad config left a run directory"


def test_bad_layer_kwarg_names_key_and_suggests(tmp_path) -> None:
    config = shipped("digits_cnn.yaml")
    config["model"]["sequential"]["layers"][-1] = {"Dense": {"unit": 10}}
    done = cli(["train", _config(tmp_path, model=config["model"])])
    assert_user_error(done, "model.sequential.layers[7].Dense.unit", "did you mean 'units'")


def test_label_shape_that_does_not_fit_the_loss(tmp_path) -> None:
    """Integer labels with categorical_crossentropy (which wants one-hot labels)."""
    path = _config(tmp_path, compile={"optimizer": "adam", "loss": "categorical_crossentropy",
                                      "metrics": ["accuracy"]})
    done = cli(["train", path])
    assert_user_error(done, "compile.loss", "labels of shape", "do not fit")


def test_labels_out_of_range_for_sparse_loss(tmp_path) -> None:
    config = shipped("digits_cnn.yaml")
    config["model"]["sequential"]["layers"][-1] = {"Dense": {"units": 5, "activation": "softmax"}}
    done = cli(["train", _config(tmp_path, model=config["model"])])
    assert_user_error(done, "compile.loss", "must be in [0, 5)", "range from 0 to 9")


def test_missing_data_file_and_wrong_key(tmp_path) -> None:
    config = shipped("digits_cnn.yaml")
    config["data"]["train"]["path"] = str(tmp_path / "gone.npz")
    assert_user_error(cli(["train", _config(tmp_path, data=config["data"])]),
                      "data.train.path", "no such file or folder")
    config = shipped("digits_cnn.yaml")
    config["data"]["train"]["x"] = "image"
    assert_user_error(cli(["train", _config(tmp_path, data=config["data"])]),
                      "data.train.x", "did you mean 'images'")


def test_features_that_do_not_fit_the_input(tmp_path) -> None:
    config = shipped("digits_cnn.yaml")
    config["model"]["sequential"]["input"]["shape"] = [64]
    config["model"]["sequential"]["layers"] = [{"Dense": {"units": 10, "activation": "softmax"}}]
    assert_user_error(cli(["train", _config(tmp_path, model=config["model"])]),
                      "data.train.x", "do not fit the model input")


def test_debug_shows_the_traceback(tmp_path) -> None:
    path = _config(tmp_path, compile={"optimizer": "adamm", "loss": "mse"})
    done = cli(["train", path, "--debug"])
    assert done.returncode == 2
    assert "Traceback" in done.stderr and "compile.optimizer" in done.stderr


def test_evaluate_and_predict_on_things_that_are_not_runs(tmp_path) -> None:
    assert_user_error(cli(["evaluate", tmp_path / "nothing"]), "no such run directory")
    assert_user_error(cli(["evaluate", tmp_path]), "not a kexp run directory")
    assert_user_error(cli(["predict", tmp_path / "m.keras", "--input", DATA / "iris_test.csv"]),
                      "no such run directory or model file")


@pytest.mark.parametrize("command", [["--help"], ["train", "--help"], ["--version"]])
def test_help_and_version(command: list[str]) -> None:
    done = cli(command)
    assert done.returncode == 0
    assert "kexp" in done.stdout.lower() or "usage" in done.stdout.lower()


def test_env_report_json() -> None:
    import json

    done = cli(["env-report", "--json"])
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["versions"]["tensorflow"] and record["tensorflow_build"]
    assert any(p.startswith("tensorflow==") for p in record["packages"])
    text = cli(["env-report"]).stdout
    assert "TensorFlow" in text and "Python" in text
