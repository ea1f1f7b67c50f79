"""In-process checks of the run machinery: callback paths default into the run directory, a
failing run keeps its directory marked failed, and predict on csv input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, shipped, write_config
from kexp.config import load_config


def test_callback_paths_default_into_the_run_directory(tmp_path) -> None:
    from kexp.tf import keras
    from kexp.training.callbacks import build_callbacks

    config = shipped("digits_cnn.yaml", callbacks=[
        {"TensorBoard": {}}, {"CSVLogger": {"filename": "my_log.csv"}},
        {"ModelCheckpoint": {}}, {"BackupAndRestore": {}},
    ])
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    run_dir = tmp_path / "run"
    callbacks, checkpoints = build_callbacks(loaded.config, run_dir)
    def only(kind: type) -> object:  # kexp subclasses some (atomic saves, full state)
        (callback,) = [c for c in callbacks if isinstance(c, kind)]
        return callback

    assert Path(only(keras.callbacks.TensorBoard).log_dir) == run_dir / "logs"
    assert Path(only(keras.callbacks.CSVLogger).filename) == run_dir / "my_log.csv"
    model_checkpoint = only(keras.callbacks.ModelCheckpoint)
    assert Path(model_checkpoint.filepath) == run_dir / "checkpoints/model.keras"
    assert type(model_checkpoint).__name__ == "AtomicModelCheckpoint"
    assert Path(only(keras.callbacks.BackupAndRestore).backup_dir) == run_dir / "backup"
    # the user's TensorBoard and CSVLogger replace kexp's own; TerminateOnNaN is added
    assert sum(isinstance(c, keras.callbacks.TensorBoard) for c in callbacks) == 1
    assert sum(isinstance(c, keras.callbacks.CSVLogger) for c in callbacks) == 1
    assert any(isinstance(c, keras.callbacks.TerminateOnNaN) for c in callbacks)
    assert checkpoints is not None and checkpoints.monitor == "val_accuracy"
    assert checkpoints.mode == "max"


def _events(log_dir: Path) -> dict[str, list[tuple[str, int, float]]]:
    """(tag, step, value) of every scalar in each of a TensorBoard log's folders."""
    from kexp.tf import tf

    out: dict[str, list[tuple[str, int, float]]] = {}
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        rows = out.setdefault(path.parent.name, [])
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    rows.append((value.tag, event.step,
                                 float(tf.make_ndarray(value.tensor))))
    return out


def test_kexp_tensorboard_writes_what_keras_writes_without_per_step_calls(
        tmp_path, monkeypatch) -> None:
    """With update_freq epoch, Keras' TensorBoard called summary.scalar for every logged
    value at every step, each writing nothing; kexp's skips those calls (a few % of a small
    model's epoch) and writes the same scalars."""
    import tensorflow.summary

    from kexp.tf import keras
    from kexp.training.callbacks import EpochTensorBoard, build_callbacks

    calls: list[str] = []
    scalar = tensorflow.summary.scalar

    def counted(name, *args, **kwargs):
        calls.append(name)
        return scalar(name, *args, **kwargs)

    monkeypatch.setattr(tensorflow.summary, "scalar", counted)
    x = np.linspace(0, 1, 48, dtype="float32").reshape(16, 3)
    y = (x.sum(axis=1) > 1.5).astype("int32")
    written = {}
    for kind in (keras.callbacks.TensorBoard, EpochTensorBoard):
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, "softmax")])
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        calls.clear()
        model.fit(x, y, batch_size=4, epochs=2, validation_data=(x, y), verbose=0,
                  callbacks=[kind(log_dir=str(tmp_path / kind.__name__))])
        written[kind] = _events(tmp_path / kind.__name__)
        batch_calls = [c for c in calls if c.startswith("batch_")]
        assert len(batch_calls) == (0 if kind is EpochTensorBoard else 2 * 4 * 2)
    assert written[EpochTensorBoard] == written[keras.callbacks.TensorBoard]
    assert {"epoch_loss", "epoch_accuracy"} <= {t for t, _, _ in written[EpochTensorBoard]["train"]}
    # kexp's own TensorBoard, and one a config declares, are this one
    config = shipped("digits_cnn.yaml", callbacks=[{"TensorBoard": {"histogram_freq": 1}}])
    for config in (config, shipped("digits_cnn.yaml")):
        loaded = load_config(write_config(tmp_path / "c.yaml", config))
        callbacks, _ = build_callbacks(loaded.config, tmp_path / "run")
        (board,) = [c for c in callbacks if isinstance(c, keras.callbacks.TensorBoard)]
        assert type(board) is EpochTensorBoard


def test_a_run_that_fails_in_training_is_kept_and_marked_failed(tmp_path, monkeypatch) -> None:
    import kexp
    from kexp.tf import keras

    def broken_fit(self, *args, **kwargs):
        raise RuntimeError("simulated crash in fit")

    monkeypatch.setattr(keras.Model, "fit", broken_fit)
    config = shipped("iris_mlp.yaml", train={"epochs": 1},
                     output={"root": str(tmp_path / "experiments")})
    with pytest.raises(RuntimeError, match="simulated crash"):
        kexp.train(write_config(tmp_path / "c.yaml", config))
    (run,) = (tmp_path / "experiments" / "iris-mlp").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["error"] == {"type": "RuntimeError", "message": "simulated crash in fit"}
    assert manifest["ended_at"]
    assert (run / "config.yaml").is_file()


def test_train_evaluate_predict_from_python_on_csv(tmp_path) -> None:
    import kexp

    from kexp.errors import ConfigError, UserError

    config = shipped("breast_cancer_mlp.yaml", train={"epochs": 2},
                     output={"root": str(tmp_path / "experiments")})
    # a mapping is a config too (was: a TypeError traceback from the path handling)
    with pytest.raises(ConfigError, match=r"train\.epoch: unknown key"):
        kexp.train({**config, "train": {"epoch": 2}})
    with pytest.raises(UserError, match="a YAML file's path or a mapping, not list"):
        kexp.train([config])
    before = json.dumps(config)
    run = kexp.train(config)
    assert json.dumps(config) == before  # the caller's mapping is left as it was
    assert run.status == "completed" and set(run.test_metrics) >= {"accuracy", "auc", "loss"}
    result = kexp.evaluate(run.directory)
    assert result["metrics"]["auc"] == pytest.approx(run.test_metrics["auc"], rel=1e-5)
    columns = kexp.predict(run.directory, DATA / "breast_cancer_test.csv",
                           output=tmp_path / "p.csv")
    # the label column in the input file is left out of the features automatically
    import csv

    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 113 and set(rows[0]) == {"probability", "predicted_label"}
    x = np.loadtxt(DATA / "breast_cancer_test.csv", delimiter=",", skiprows=1)[:, :-1]
    expected = run.model.predict(x.astype("float32"), verbose=0)[:, 0]
    np.testing.assert_allclose(columns["probability"], expected, atol=1e-5)
    np.testing.assert_array_equal(columns["predicted_label"], (expected >= 0.5).astype(int))
