"""Functional models end to end: the shipped configs validate and train through the real CLI,
multi-output runs log and evaluate each output under its own name, and the saved models (shared
layers, blocks, two inputs, two outputs) reload with plain Keras in a fresh process and predict
identically."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import CONFIGS, DATA, only_run, shipped, write_config
from kexp.cli import app

FUNCTIONAL_CONFIGS = ["breast_cancer_resmlp.yaml", "digits_two_input.yaml", "digits_two_output.yaml"]


@pytest.mark.parametrize("name", FUNCTIONAL_CONFIGS)
def test_shipped_functional_configs_validate(name: str) -> None:
    result = CliRunner().invoke(app, ["validate", str(CONFIGS / name)])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output  # no unused node, input, layer or block
    assert "ok:" in result.output


def test_validate_plots_or_says_what_to_install(tmp_path: Path) -> None:
    from kexp.model.summary import plotting_available

    picture = tmp_path / "graph.png"
    result = CliRunner().invoke(app, ["validate", str(CONFIGS / "digits_two_input.yaml"),
                                      "--plot", str(picture)])
    text = result.output
    assert result.exit_code == 0, text
    assert "image_features" in text and "stats_features" in text
    assert "inputs: pixels (None, 8, 8, 1), stats (None, 4)" in text
    if plotting_available():
        assert f"wrote {picture}" in text
        assert picture.read_bytes()[:4] == b"\x89PNG"
    else:
        assert "note: no plot written" in text and "pip install" in text
        assert not picture.exists()


def test_plot_never_overwrites_a_file(tmp_path: Path) -> None:
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"the user's picture")
    result = CliRunner().invoke(app, ["validate", str(CONFIGS / "digits_two_input.yaml"),
                                      "--plot", str(mine)])
    assert result.exit_code == 2, result.output
    assert "already exists" in result.output
    assert mine.read_bytes() == b"the user's picture"


def test_two_outputs_train_and_report_each_output(tmp_path: Path) -> None:
    config = shipped("digits_two_output.yaml", train={"epochs": 1},
                     output={"root": str(tmp_path / "runs")})
    result = CliRunner().invoke(app, ["train", str(write_config(tmp_path / "two.yaml", config))])
    assert result.exit_code == 0, result.output
    assert "not available" not in result.output  # callbacks found val_digit_accuracy
    run = only_run(tmp_path / "runs")
    with (run / "history.csv").open() as handle:
        header = next(csv.reader(handle))
    for name in ("digit_accuracy", "parity_auc", "val_digit_accuracy", "val_parity_accuracy",
                 "val_digit_loss", "val_parity_loss", "val_loss"):
        assert name in header, header
    metrics = json.loads((run / "evaluation.json").read_text())["metrics"]
    assert {"digit_accuracy", "parity_accuracy", "parity_auc", "loss"} <= set(metrics)
    best = json.loads((run / "manifest.json").read_text())["best_checkpoint"]
    assert best["monitor"] == "val_digit_accuracy"


RELOAD = f"""
name: reload
seed: 1
deterministic: true
data:
  train:
    source: npz
    path: {DATA / 'digits_train.npz'}
    x: {{pixels: images, stats: stats}}
    y: {{digit: labels, parity: parity}}
  batch_size: 64
model:
  functional:
    inputs:
      pixels: {{shape: [8, 8, 1]}}
      stats: {{shape: [4]}}
    layers:
      shared: {{Dense: {{units: 16, activation: relu}}}}
    blocks:
      residual:
        inputs: [x]
        graph:
          - {{name: h, layer: {{Dense: {{units: 16, activation: relu}}}}, inputs: x}}
          - {{name: y, layer: Add, inputs: [x, h]}}
        outputs: [y]
    graph:
      - {{name: flat, layer: Flatten, inputs: pixels}}
      - {{name: pre, layer: {{Dense: {{units: 16}}}}, inputs: flat}}
      - {{name: s1, layer: shared, inputs: pre}}
      - {{name: s2, layer: shared, inputs: s1}}
      - {{name: deep, block: residual, repeat: 2, inputs: s2}}
      # two sub-models of each kind, with the same inner layer names (two applications:
      # tests/test_functional_model.py, where training them costs no 30 s of tracing)
      - {{name: sub_a, model: {{functional: {{inputs: {{x: {{shape: [16]}}}}, outputs: [h],
          graph: [{{name: h, layer: {{Dense: {{units: 4}}}}, inputs: x}}]}}}}, inputs: s2}}
      - {{name: sub_b, model: {{functional: {{inputs: {{x: {{shape: [16]}}}}, outputs: [h],
          graph: [{{name: h, layer: {{Dense: {{units: 4}}}}, inputs: x}}]}}}}, inputs: s2}}
      - {{name: seq_a, model: {{sequential: {{input: {{shape: [16]}},
          layers: [{{Dense: {{units: 4, name: h}}}}]}}}}, inputs: s2}}
      - {{name: seq_b, model: {{sequential: {{input: {{shape: [16]}},
          layers: [{{Dense: {{units: 4, name: h}}}}]}}}}, inputs: s2}}
      - {{name: joined, layer: Concatenate, inputs: [deep, stats, sub_a, sub_b, seq_a, seq_b]}}
      - {{name: digit, layer: {{Dense: {{units: 10, activation: softmax}}}}, inputs: joined}}
      - {{name: parity, layer: {{Dense: {{units: 1, activation: sigmoid}}}}, inputs: joined}}
    outputs: [digit, parity]
compile:
  loss: {{digit: sparse_categorical_crossentropy, parity: binary_crossentropy}}
  metrics: {{digit: [accuracy]}}
train: {{epochs: 1}}
output: {{formats: [keras, h5]}}
"""

_RELOAD_SCRIPT = """
import sys
import numpy as np
import keras
data = np.load(sys.argv[1])
x = {"pixels": data["images"], "stats": data["stats"]}
out = {}
for path in sys.argv[3:]:
    model = keras.models.load_model(path)
    layer = model.get_layer("shared")
    calls = [n for n in layer._inbound_nodes]
    assert len(calls) == 2, calls
    paths = [w.path for w in model.weights]
    assert paths.count("shared/kernel") == 1
    assert len(set(paths)) == len(paths), sorted(p for p in paths if paths.count(p) > 1)
    for name in ("sub_a_h/kernel", "sub_b_h/kernel", "seq_a_h/kernel", "seq_b_h/kernel"):
        assert any(p.endswith(name) for p in paths), name  # .h5: seq_a/seq_a_h/kernel
    for name, value in model.predict(x, verbose=0).items():
        out[path.rsplit(".", 1)[1] + "_" + name] = value
np.savez(sys.argv[2], **out)
"""


def test_saved_models_reload_with_plain_keras_and_predict_identically(tmp_path: Path) -> None:
    from kexp.config import load_config_text
    from kexp.training.run import train

    run = train(load_config_text(RELOAD), output_root=tmp_path / "runs")
    assert run.status == "completed"  # both files written: every weight has a name of its own
    test = np.load(DATA / "digits_test.npz")
    expected = run.model.predict({"pixels": test["images"], "stats": test["stats"]}, verbose=0)
    done = subprocess.run(
        [sys.executable, "-c", _RELOAD_SCRIPT, str(DATA / "digits_test.npz"),
         str(tmp_path / "reloaded.npz"), str(run.directory / "model.keras"),
         str(run.directory / "model.h5")],
        capture_output=True, text=True, timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reloaded = np.load(tmp_path / "reloaded.npz")
    for fmt in ("keras", "h5"):
        for name in ("digit", "parity"):
            assert np.array_equal(reloaded[f"{fmt}_{name}"], expected[name]), (fmt, name)


def test_a_model_file_that_cannot_be_written_costs_only_that_file(tmp_path: Path,
                                                                  monkeypatch) -> None:
    """The .h5 writer failing after training (as it did for two sub-models with the same inner
    names): model.keras, the test evaluation and the manifest are still written, the run is
    'incomplete' with the reason, and the command says so and exits 1 without a traceback."""
    from keras.src.legacy.saving import legacy_h5_format

    def refuse(*args: object, **kwargs: object) -> None:
        raise ValueError("Unable to synchronously create dataset (name already exists)")

    monkeypatch.setattr(legacy_h5_format, "save_model_to_hdf5", refuse)
    config = shipped("digits_two_output.yaml", train={"epochs": 1}, callbacks=[],
                     output={"root": str(tmp_path / "runs"), "formats": ["h5", "keras"]})
    result = CliRunner().invoke(app, ["train", str(write_config(tmp_path / "two.yaml", config))])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    said = "".join(result.output.split())  # rich wraps long lines, paths included
    assert "model.h5couldnotbewritten:ValueError:Unabletosynchronously" in said
    run = only_run(tmp_path / "runs")
    assert not (run / "model.h5").exists() and (run / "model.keras").is_file()
    assert not list(run.glob(".*.tmp*"))  # no half-written temporary left behind
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "incomplete"
    assert manifest["missing_artifacts"] == {
        "model.h5": "ValueError: Unable to synchronously create dataset (name already exists)"}
    assert manifest["test_metrics"] and manifest["weights_sha256"]
    assert json.loads((run / "evaluation.json").read_text())["metrics"]["digit_accuracy"] >= 0
    assert f"kexpresume{run}writesthemissingfiles" in said
    # the cause gone, a resume with nothing left to train writes the missing file
    monkeypatch.undo()
    result = CliRunner().invoke(app, ["resume", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "model.h5").is_file()
    resumed = json.loads((run / "manifest.json").read_text())
    assert resumed["status"] == "completed" and resumed["missing_artifacts"] is None
    assert resumed["weights_sha256"] == manifest["weights_sha256"]


CSV_TWO_OUTPUTS = f"""
name: csv-two-outputs
seed: 2
data:
  train: {{source: csv, path: {DATA / 'breast_cancer_train.csv'},
          label: {{malignant: malignant, size: worst_radius}}}}
  validation: {{split: 0.2}}
  test: {{source: csv, path: {DATA / 'breast_cancer_test.csv'},
         label: {{malignant: malignant, size: worst_radius}}}}
  batch_size: 32
model:
  functional:
    inputs: {{x: {{shape: [29]}}}}
    graph:
      - {{name: scaled, layer: {{Rescaling: {{scale: 0.001}}}}, inputs: x}}
      - {{name: h, layer: {{Dense: {{units: 16, activation: relu}}}}, inputs: scaled}}
      - {{name: malignant, layer: {{Dense: {{units: 1, activation: sigmoid}}}}, inputs: h}}
      - {{name: size, layer: {{Dense: {{units: 1}}}}, inputs: h}}
    outputs: [malignant, size]
compile:
  loss: {{malignant: binary_crossentropy, size: mse}}
  metrics: {{malignant: [accuracy]}}
train: {{epochs: 1}}
callbacks: []
"""


def test_csv_labels_keyed_by_output_train_evaluate_and_predict(tmp_path: Path) -> None:
    """label: {output: column}: one label array per output, all the way to predictions (the
    label columns, not the output names, are left out of the features of a file to predict)."""
    config = tmp_path / "csv.yaml"
    config.write_text(CSV_TWO_OUTPUTS)
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(config), "--output-root", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path / "runs")
    metrics = json.loads((run / "evaluation.json").read_text())["metrics"]
    assert {"malignant_loss", "malignant_accuracy", "size_loss"} <= set(metrics)
    with (run / "history.csv").open() as handle:
        assert "val_size_loss" in next(csv.reader(handle))
    predictions = tmp_path / "predictions.csv"
    result = runner.invoke(app, ["predict", str(run), "--input", str(DATA / "breast_cancer_test.csv"),
                                 "--output", str(predictions)])
    assert result.exit_code == 0, result.output
    with predictions.open() as handle:
        rows = list(csv.DictReader(handle))
    with (DATA / "breast_cancer_test.csv").open() as handle:
        assert len(rows) == len(list(csv.DictReader(handle)))
    assert set(rows[0]) == {"malignant_probability", "malignant_predicted_label", "size_prediction"}


def test_csv_features_and_labels_keyed_by_name_read_alike_in_memory_and_streamed() -> None:
    """features: {input: [columns]} is one matrix per input; both readings give equal arrays."""
    from kexp.config.schema import CsvSource
    from kexp.data.sources.csv import load_csv
    from kexp.errors import ConfigError

    spec = CsvSource(source="csv", path=str(DATA / "breast_cancer_test.csv"),
                     features={"mean": ["mean_radius", "mean_area", "mean_texture"],
                               "worst": ["worst_area", "worst_texture"]},
                     label={"malignant": "malignant", "size": "worst_radius"})
    whole = load_csv(spec.model_copy(update={"stream": False}), ("data", "test"))
    assert whole.x["mean"].shape == (len(whole), 3) and whole.x["worst"].shape == (len(whole), 2)
    assert whole.y["malignant"].dtype == np.int64 and whole.y["size"].dtype == np.float32
    streamed = load_csv(spec.model_copy(update={"stream": True}), ("data", "test"))
    examples = list(streamed.dataset().as_numpy_iterator())
    assert len(examples) == len(whole)
    for i in (0, 57, len(whole) - 1):
        x, y = examples[i]
        for name in ("mean", "worst"):
            assert np.array_equal(x[name], whole.x[name][i])
        for name in ("malignant", "size"):
            assert y[name] == whole.y[name][i] and y[name].dtype == whole.y[name].dtype
    typed = spec.model_copy(update={"column_types": {"mean_area": "integer"}})
    with pytest.raises(ConfigError) as caught:
        load_csv(typed, ("data", "test"))
    assert caught.value.issues[0].path == ("data", "test", "features", "mean", 1)
    assert "must be numeric" in caught.value.issues[0].message
