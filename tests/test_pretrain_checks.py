"""Checks before training (kexp.training.probe, kexp.training.callbacks): mistakes that used to
pass validation and the training-split checks, then crash in ``fit`` or after it (a traceback,
exit 1, a run directory left ``failed``), are config errors at their key path, exit 2, before
any run directory exists.

1. validation and test splits are checked like train: label range, features, label rank;
2. every compiled metric is probed on real examples (``compile.metrics[i]``);
3. callbacks: SwapEMAWeights without ``use_ema``, the paths they write.

Most cases call ``kexp.training.run.train`` in this process (the CLI's own code path, without
a TensorFlow start per case); one case of each kind also runs through the CLI.
"""

from __future__ import annotations

import copy
import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from conftest import DATA, assert_user_error, cli, shipped, write_config
from kexp.config import load_config

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _iris(tmp_path: Path, **overrides: Any) -> dict:
    """The shipped iris MLP (3 classes, validation: 20% of train, test csv) for 1 epoch."""
    config = shipped("iris_mlp.yaml", train={"epochs": 1}, callbacks=[],
                     output={"root": str(tmp_path / "runs"), "formats": ["keras"]})
    config.update(copy.deepcopy(overrides))
    return config


def _iris_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    with (DATA / name).open() as handle:
        rows = list(csv.DictReader(handle))
    x = np.array([[float(row[f]) for f in FEATURES] for row in rows], dtype="float32")
    return x, np.array([int(row["species_id"]) for row in rows])


def _no_run_dir(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.rglob("*")), list(runs.rglob("*"))


def _refused(tmp_path: Path, config: dict) -> list[Any]:
    """The issues ``kexp train`` reports for ``config``; each has a line; no run directory."""
    from kexp.errors import ConfigError
    from kexp.training.run import train

    path = write_config(tmp_path / "c.yaml", config)
    with pytest.raises(ConfigError) as caught:
        train(load_config(path), out=Console(file=io.StringIO()))
    _no_run_dir(tmp_path)
    assert all(issue.line is not None for issue in caught.value.issues), caught.value
    return caught.value.issues


def _one(tmp_path: Path, config: dict) -> Any:
    (issue,) = _refused(tmp_path, config)
    return issue


def _line(path: Path, text: str, last: bool = False) -> int:
    found = [n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    return found[-1] if last else found[0]


def _train_cli(tmp_path: Path, config: dict) -> tuple[Any, Path]:
    path = write_config(tmp_path / "c.yaml", config)
    done = cli(["train", path, "--output-root", tmp_path / "runs"])
    _no_run_dir(tmp_path)
    return done, path


# ------------------------------------------------------------ 1. validation and test splits


def test_a_test_label_outside_the_classes_is_refused_before_training(tmp_path: Path) -> None:
    """Was: InvalidArgumentError 'Received a label value of 7 which is outside the valid range
    of [0, 3)' in the test evaluation, after training, the run left failed."""
    rows = (DATA / "iris_test.csv").read_text().splitlines()
    head, *body = rows
    body[20] = body[20].rsplit(",", 1)[0] + ",7"  # past the first examples the probe runs
    bad = tmp_path / "test.csv"
    bad.write_text("\n".join([head, *body]) + "\n")
    config = _iris(tmp_path)
    config["data"]["test"]["path"] = str(bad)
    done, path = _train_cli(tmp_path, config)
    assert_user_error(done, f"c.yaml:{_line(path, 'label: species_id', last=True)}: data.test.label: "
                      "labels range from 0 to 7, but sparse categorical labels must be in "
                      "[0, 3) for this model")


def test_each_sparse_output_of_a_multi_output_model_is_range_checked(tmp_path: Path) -> None:
    """Was: a digit label 12 in a two-output model's test split passed every check and failed
    in the test evaluation after training (the range check saw single-label models only)."""
    digits = dict(np.load(DATA / "digits_test.npz"))
    digits["labels"] = digits["labels"].copy()
    digits["labels"][50] = 12
    bad = tmp_path / "test.npz"
    np.savez(bad, **digits)
    config = shipped("digits_two_output.yaml", train={"epochs": 1}, callbacks=[],
                     output={"root": str(tmp_path / "runs"), "formats": ["keras"]})
    config["data"]["test"]["path"] = str(bad)
    issue = _one(tmp_path, config)
    assert issue.path == ("data", "test", "y")
    assert issue.message.startswith(
        "labels of output 'digit' range from 0 to 12, but sparse categorical labels must be "
        "in [0, 10) for this model")


def test_a_class_id_that_is_not_whole_is_refused(tmp_path: Path) -> None:
    """Was: Keras cast a label 1.5 to class 1 without a word."""
    rows = (DATA / "iris_train.csv").read_text().splitlines()
    head, *body = rows
    body[30] = body[30].rsplit(",", 1)[0] + ",1.5"
    bad = tmp_path / "train.csv"
    bad.write_text("\n".join([head, *body]) + "\n")
    config = _iris(tmp_path)
    config["data"]["train"]["path"] = str(bad)
    issue = _one(tmp_path, config)
    assert issue.path == ("data", "train", "label")
    assert issue.message.startswith("label 1.5 of example ")
    assert "is not a whole number, but sparse categorical labels are class ids" in issue.message


def test_test_features_that_do_not_fit_the_model_are_refused(tmp_path: Path) -> None:
    """Was: 'Matrix size-incompatible' after training."""
    config = _iris(tmp_path)
    config["data"]["test"]["features"] = FEATURES[:3]
    issue = _one(tmp_path, config)
    assert issue.path == ("data", "test", "features")
    assert "features of shape (3,) (per example) do not fit the model input (4,); " \
           "data.train's are (4,): Input 0" in issue.message


def test_validation_and_test_npz_of_another_shape_are_refused(tmp_path: Path) -> None:
    x, y = _iris_arrays("iris_train.csv")
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "narrow.npz", x=x[:, :3], y=y)
    np.savez(tmp_path / "square.npz", x=x.reshape(-1, 2, 2), y=y)
    npz = lambda name: {"source": "npz", "path": str(tmp_path / name), "x": "x", "y": "y"}  # noqa: E731
    config = _iris(tmp_path)
    config["data"].update(train=npz("train.npz"), validation=npz("narrow.npz"))
    issue = _one(tmp_path, config)
    assert issue.path == ("data", "validation", "x")
    assert "features of shape (3,) (per example) do not fit the model input (4,)" in issue.message
    config["data"].update(validation={"split": 0.2}, test=npz("square.npz"))
    issue = _one(tmp_path, config)
    assert issue.path == ("data", "test", "x")
    # Keras' message, without the array it prints whole
    assert ("features of shape (2, 2) (per example) do not fit the model input (4,); "
            "data.train's are (4,): Invalid input shape for input [...]") in issue.message
    assert "Expected shape (None, 4), but input has incompatible shape (8, 2, 2)" in issue.message


@pytest.mark.parametrize("train_shape, test_shape", [((-1, 1), (-1,)), ((-1,), (-1, 1))])
def test_labels_of_another_rank_than_train_are_refused(tmp_path: Path, train_shape: tuple,
                                                       test_shape: tuple) -> None:
    """Each split alone fits the loss; together they failed after training with 'Cannot take
    the length of shape with unknown rank' (one traced evaluation sees both ranks)."""
    x, y = _iris_arrays("iris_train.csv")
    x_test, y_test = _iris_arrays("iris_test.csv")
    np.savez(tmp_path / "train.npz", x=x, y=y.reshape(train_shape))
    np.savez(tmp_path / "test.npz", x=x_test, y=y_test.reshape(test_shape))
    config = _iris(tmp_path)
    for split in ("train", "test"):
        config["data"][split] = {"source": "npz", "path": str(tmp_path / f"{split}.npz"),
                                 "x": "x", "y": "y"}
    issue = _one(tmp_path, config)
    assert issue.path == ("data", "test", "y")
    train_text, test_text = (str(tuple(s[1:])) for s in (train_shape, test_shape))
    assert (f"labels of shape {test_text} per example, but data.train's are {train_text} "
            "(another rank): every split must give its labels with the rank of "
            "data.train's") in issue.message


def test_a_fraction_split_is_checked_too(tmp_path: Path) -> None:
    """A label no model class has, only in the examples the validation fraction draws."""
    from kexp.data.splits import fraction_indices

    rows = (DATA / "iris_train.csv").read_text().splitlines()
    head, *body = rows
    held_out = fraction_indices(len(body), {"validation": 0.2}, seed=7)["validation"]
    row = int(held_out[-1])
    body[row] = body[row].rsplit(",", 1)[0] + ",5"
    source = tmp_path / "train.csv"
    source.write_text("\n".join([head, *body]) + "\n")
    config = _iris(tmp_path, seed=7)
    config["data"]["train"]["path"] = str(source)
    issue = _one(tmp_path, config)
    assert issue.path == ("data", "validation", "split")
    assert "labels (drawn from data.train) range from 0 to 5, but sparse categorical labels " \
           "must be in [0, 3)" in issue.message


def test_a_test_split_without_labels_is_refused(tmp_path: Path) -> None:
    x_test, _ = _iris_arrays("iris_test.csv")
    np.savez(tmp_path / "test.npz", x=x_test)
    config = _iris(tmp_path)
    config["data"]["test"] = {"source": "npz", "path": str(tmp_path / "test.npz"), "x": "x",
                              "y": None}
    issue = _one(tmp_path, config)
    assert issue.path == ("data", "test")
    assert "the test split has no labels" in issue.message


# ------------------------------------------------------------------------------ 2. metrics


def test_a_metric_that_does_not_fit_the_labels_is_refused_at_its_index(tmp_path: Path) -> None:
    """Was: 'data.shape = [16] does not start with segment_ids.shape = [48]' in fit."""
    config = _iris(tmp_path)
    config["compile"]["metrics"] = ["accuracy", {"AUC": {}}]
    done, path = _train_cli(tmp_path, config)
    assert_user_error(
        done, f"c.yaml:{_line(path, 'AUC')}: compile.metrics[1]: AUC cannot be computed on "
        "these labels and outputs: labels of shape () per example, model output of shape "
        "(3,): Keras says: Argument `segment_ids` and `data` should have same leading "
        "dimension", "the labels are class ids (one per example)", "it needs one-hot labels")


@pytest.mark.parametrize("metric, says", [
    ("precision", "Keras says: Incompatible shapes"),
    ({"F1Score": {}}, "Keras says: FBetaScore expects 2D inputs"),
])
def test_metrics_that_fail_on_class_ids(tmp_path: Path, metric: Any, says: str) -> None:
    config = _iris(tmp_path)
    config["compile"]["metrics"] = [metric, "sparse_categorical_accuracy"]
    issue = _one(tmp_path, config)
    assert issue.path == ("compile", "metrics", 0)
    assert says in issue.message and "it needs one-hot labels" in issue.message


def test_categorical_accuracy_on_class_ids_is_refused(tmp_path: Path) -> None:
    """Keras raises nothing and reports 0.0 (iris): meaningless, so refused (see probe.py)."""
    config = _iris(tmp_path)
    config["compile"]["metrics"] = ["categorical_accuracy"]
    issue = _one(tmp_path, config)
    assert issue.path == ("compile", "metrics", 0)
    assert "categorical accuracy takes the argmax of each label, which needs one-hot " \
           "labels" in issue.message
    assert issue.suggestion == "sparse_categorical_accuracy"


def test_a_metric_of_one_output_is_refused_at_its_output_key(tmp_path: Path) -> None:
    config = shipped("digits_two_output.yaml", train={"epochs": 1}, callbacks=[],
                     output={"root": str(tmp_path / "runs")})
    config["compile"]["metrics"] = {"digit": ["accuracy", {"Precision": {}}],
                                    "parity": ["accuracy"]}
    config["checkpoint"] = {"monitor": "val_loss"}
    issue = _one(tmp_path, config)
    assert issue.path == ("compile", "metrics", "digit", 1)
    assert "Precision cannot be computed" in issue.message
    assert "model output of shape (10,)" in issue.message


def test_fitting_metrics_are_logged_once_probed(tmp_path: Path) -> None:
    """The probe names what an epoch logs; a monitor of a probed metric is accepted, and
    the metrics start the training from zero (the probe's updates are reset)."""
    from kexp.config.schema import ExperimentConfig
    from kexp.data.splits import load_splits
    from kexp.training.callbacks import check_monitors
    from kexp.training.probe import check_data_fits
    from kexp.training.run import prepare

    config = _iris(tmp_path)
    config["compile"]["metrics"] = ["accuracy", {"SparseTopKCategoricalAccuracy": {"k": 2}}]
    config["callbacks"] = [{"EarlyStopping": {"monitor": "val_sparse_top_k_categorical_accuracy",
                                              "mode": "max"}}]
    loaded = load_config(write_config(tmp_path / "c.yaml", config))
    config_obj, _, model = prepare(loaded)
    assert isinstance(config_obj, ExperimentConfig)
    splits = load_splits(config_obj.data, config_obj.seed)
    logged = check_data_fits(model, splits, config_obj)
    assert logged == {"loss", "accuracy", "sparse_top_k_categorical_accuracy"}
    check_monitors(model, logged, config_obj)
    assert all(float(np.sum(v)) == 0.0 for v in model.metrics_variables)


# ---------------------------------------------------------------------------- 3. callbacks


def test_swap_ema_weights_needs_use_ema(tmp_path: Path) -> None:
    """Was: 'SwapEMAWeights must be used when use_ema=True is set on the optimizer' after
    the first epoch. Refused by validate too (the check is part of the model's preparation)."""
    config = _iris(tmp_path, callbacks=[{"SwapEMAWeights": {}}])
    issue = _one(tmp_path, config)
    assert issue.path == ("callbacks", 0, "SwapEMAWeights")
    assert issue.message.endswith("keeps only with use_ema: true; set "
                                  "compile.optimizer.Adam.use_ema: true")
    config["compile"]["optimizer"] = "adam"
    issue = _one(tmp_path, config)
    assert "compile.optimizer is 'adam': write it as {Adam: {use_ema: true}}" in issue.message
    done = cli(["validate", write_config(tmp_path / "c.yaml", config)])
    assert_user_error(done, "callbacks[0].SwapEMAWeights: SwapEMAWeights swaps in")


def test_a_csv_logger_aimed_at_a_directory_is_refused(tmp_path: Path) -> None:
    """Was: IsADirectoryError when training began, the run left failed."""
    (tmp_path / "existing").mkdir()
    config = _iris(tmp_path, callbacks=[{"CSVLogger": {"filename": str(tmp_path / "existing")}}])
    done, path = _train_cli(tmp_path, config)
    assert_user_error(done, f"c.yaml:{_line(path, 'filename')}: callbacks[0].CSVLogger.filename:"
                      f" {tmp_path / 'existing'} is a directory, but CSVLogger writes the "
                      "history to a file: give a file name in it (e.g. "
                      f"{tmp_path / 'existing' / 'history.csv'})")


def test_callback_paths_that_cannot_be_written_are_refused(tmp_path: Path) -> None:
    """Was: NotFoundError (TensorBoard), or errors at the first save, after an epoch."""
    (tmp_path / "a_file").write_text("mine\n")
    other_run = tmp_path / "other_backup"
    other_run.mkdir()
    (other_run / "state.json").write_text("{}")
    config = _iris(tmp_path, callbacks=[
        {"TensorBoard": {"log_dir": "/proc/forbidden"}},
        {"ModelCheckpoint": {"filepath": str(tmp_path / "a_file" / "{epoch}.keras")}},
        {"BackupAndRestore": {"backup_dir": str(tmp_path / "a_file")}},
        {"CSVLogger": {"filename": "manifest.json"}},
        {"TensorBoard": {"log_dir": "../tb"}},              # fine: next to the runs
    ])
    issues = {issue.path: issue.message for issue in _refused(tmp_path, config)}
    assert issues == {
        ("callbacks", 0, "TensorBoard", "log_dir"):
            "TensorBoard cannot write its logs there: /proc/forbidden does not exist and cannot "
            "be created: no folder can be created in /proc (a special file system that does "
            "not hold new files)",
        ("callbacks", 1, "ModelCheckpoint", "filepath"):
            f"{tmp_path / 'a_file'} is a file, but ModelCheckpoint writes its checkpoints into "
            "a directory",  # (the folder above {epoch}, which it fills in)
        ("callbacks", 2, "BackupAndRestore", "backup_dir"):
            f"{tmp_path / 'a_file'} is a file, but BackupAndRestore writes the training state "
            "into a directory",
        ("callbacks", 3, "CSVLogger", "filename"):
            "manifest.json is the run's manifest, which kexp writes there: CSVLogger and kexp "
            "would overwrite each other's file; choose another name",
    }
    assert (tmp_path / "a_file").read_text() == "mine\n"
    config["callbacks"] = [{"BackupAndRestore": {"backup_dir": str(other_run)}}]
    issue = _one(tmp_path, config)
    assert issue.path == ("callbacks", 0, "BackupAndRestore", "backup_dir")
    assert "holds the training state of another run (state.json)" in issue.message
    # was: accepted, the CSV rows replaced by kexp's state and the run's history lost
    config["callbacks"] = [{"CSVLogger": {"filename": "backup/state.json"}}]
    issue = _one(tmp_path, config)
    assert issue.path == ("callbacks", 0, "CSVLogger", "filename")
    assert issue.message.startswith("backup/state.json is inside kexp's folder backup/")


def test_a_callback_file_outside_the_run_that_exists_is_not_overwritten(tmp_path: Path) -> None:
    """An absolute CSVLogger/ModelCheckpoint file an earlier run wrote would be overwritten by
    the next run of the same config: refused, unless the CSVLogger appends."""
    earlier_log, earlier_model = tmp_path / "log.csv", tmp_path / "best.keras"
    earlier_log.write_text("epoch,loss\n0,1.0\n")
    earlier_model.write_text("an earlier run's model")
    config = _iris(tmp_path, callbacks=[
        {"CSVLogger": {"filename": str(earlier_log)}},
        {"ModelCheckpoint": {"filepath": str(earlier_model)}},
    ])
    issues = {issue.path: issue.message for issue in _refused(tmp_path, config)}
    assert issues[("callbacks", 0, "CSVLogger", "filename")] == (
        f"{earlier_log} already exists (an earlier run's?) and CSVLogger would overwrite it: "
        "give a relative path (it goes into the new run directory), a new file name, or "
        "append: true")
    assert issues[("callbacks", 1, "ModelCheckpoint", "filepath")].startswith(
        f"{earlier_model} already exists")
    assert earlier_log.read_text() == "epoch,loss\n0,1.0\n"
    config["callbacks"] = [{"CSVLogger": {"filename": str(earlier_log), "append": True}}]
    from kexp.training.callbacks import check_callback_paths

    check_callback_paths(load_config(write_config(tmp_path / "c.yaml", config)).config,
                         tmp_path / "runs" / "new")  # appending to it is what was asked


@pytest.mark.slow
def test_callbacks_write_new_folders_and_swap_ema_weights_trains(tmp_path: Path) -> None:
    """What passes the checks trains: a CSVLogger in folders that do not exist yet (Keras'
    does not make them; kexp's does), SwapEMAWeights with use_ema."""
    from kexp.training.run import train

    config = _iris(tmp_path, callbacks=[
        {"CSVLogger": {"filename": str(tmp_path / "new" / "deeper" / "history.csv")}},
        {"SwapEMAWeights": {}},
    ])
    config["compile"]["optimizer"] = {"Adam": {"learning_rate": 0.01, "use_ema": True}}
    run = train(load_config(write_config(tmp_path / "c.yaml", config)),
                out=Console(file=io.StringIO()))
    assert run.status == "completed" and run.test_metrics is not None
    rows = (tmp_path / "new" / "deeper" / "history.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and len(rows) == 2
    # the run's own history.csv is there beside it (was: a user CSVLogger replaced it)
    assert (run.directory / "history.csv").read_text().splitlines()[0] == rows[0]
    config["callbacks"] = [{"CSVLogger": {"filename": "csv/history.csv"}}]  # in the run dir
    run = train(load_config(write_config(tmp_path / "c.yaml", config)),
                out=Console(file=io.StringIO()))
    assert len((run.directory / "csv" / "history.csv").read_text().splitlines()) == 2
    assert len((run.directory / "history.csv").read_text().splitlines()) == 2
    config["callbacks"] = [{"CSVLogger": {"separator": ";"}}]  # writes history.csv itself
    run = train(load_config(write_config(tmp_path / "c.yaml", config)),
                out=Console(file=io.StringIO()))
    assert (run.directory / "history.csv").read_text().startswith("epoch;")


# ------------------------------------------------------------------------ 4. class weights


def test_class_weights_that_leave_out_the_last_class_train_with_it_at_one(tmp_path: Path) -> None:
    """Was: a GatherV2 'indices[0] = 2 is not in [0, 2)' traceback from the input pipeline
    during the first epoch (Keras' table ends at the largest key), exit 1."""
    from kexp.training.class_weight import class_weights
    from kexp.training.run import train

    config = _iris(tmp_path, train={"epochs": 1, "class_weight": {1: 3.0}})
    run = train(load_config(write_config(tmp_path / "c.yaml", config)),
                out=Console(file=io.StringIO()))
    assert run.status == "completed" and np.isfinite(run.history["loss"]).all()
    assert class_weights(run.model, run.config) == {0: 1.0, 1: 3.0, 2: 1.0}


def test_a_class_weight_past_the_models_classes_is_refused(tmp_path: Path) -> None:
    """Was: silently never used."""
    config = _iris(tmp_path, train={"epochs": 1, "class_weight": {0: 1.0, 7: 2.0}})
    done, path = _train_cli(tmp_path, config)
    assert_user_error(done, f"c.yaml:{_line(path, 'class_weight')}: train.class_weight: "
                      "class 7 is not a class of this model: its output has 3 classes, 0..2")


def test_class_weights_on_a_two_output_model_are_refused(tmp_path: Path) -> None:
    """Was: Keras' 'class_weight is only supported for Models with a single output' once fit
    started, after the run directory existed."""
    config = shipped("digits_two_output.yaml", train={"epochs": 1, "class_weight": {0: 2.0}},
                     callbacks=[], output={"root": str(tmp_path / "runs"), "formats": ["keras"]})
    issue = _one(tmp_path, config)
    assert issue.path == ("train", "class_weight")
    assert "this one has 2 (digit, parity)" in issue.message


def _iris_one_unit(tmp_path: Path, loss: str, **train: Any) -> dict:
    """The iris MLP ending in one sigmoid unit, its labels still the species 0..2."""
    config = _iris(tmp_path, train={"epochs": 1, **train})
    config["model"]["sequential"]["layers"][-1] = {"Dense": {"units": 1, "activation": "sigmoid"}}
    config["compile"]["loss"] = loss
    config["data"]["test"] = None
    return config


def test_class_weights_on_labels_past_the_classes_are_refused(tmp_path: Path) -> None:
    """Was: a GatherV2 'indices[0] = 2 is not in [0, 2)' traceback in the first epoch, exit 1
    (a one-unit model has 2 classes, the iris labels go to 2; likewise a regression target)."""
    config = _iris_one_unit(tmp_path, "mse", class_weight={0: 1.0, 1: 2.0})
    done, path = _train_cli(tmp_path, config)
    assert_user_error(done, f"c.yaml:{_line(path, 'class_weight')}: train.class_weight: class "
                      "weights need labels that are class ids 0..1 (this model's output has 2 "
                      "classes), but the training labels range from 0 to 2")


def test_class_weights_on_fractional_labels_are_refused(tmp_path: Path) -> None:
    """Was: Keras weighed a label 0.5 as class 0 without a word."""
    rows = (DATA / "iris_train.csv").read_text().splitlines()
    head, *body = rows
    body = [row for row in body if not row.endswith(",2")]
    body[12] = body[12].rsplit(",", 1)[0] + ",0.5"
    bad = tmp_path / "train.csv"
    bad.write_text("\n".join([head, *body]) + "\n")
    config = _iris_one_unit(tmp_path, "mse", class_weight={1: 2.0})
    config["data"]["train"]["path"] = str(bad)
    config["data"]["validation"] = None  # every row in the training split
    issue = _one(tmp_path, config)
    assert issue.path == ("train", "class_weight")
    assert "label 0.5 of training example" in issue.message


def test_binary_crossentropy_on_labels_past_one_is_refused(tmp_path: Path) -> None:
    """Was: trained without a word on labels 0..2, a loss that means nothing."""
    config = _iris_one_unit(tmp_path, "binary_crossentropy")
    done, path = _train_cli(tmp_path, config)
    assert_user_error(done, f"c.yaml:{_line(path, 'loss:')}: compile.loss: binary "
                      "cross-entropy needs labels in [0, 1]", "range from 0 to 2")


def test_a_batch_larger_than_the_split_with_drop_remainder_is_refused(tmp_path: Path) -> None:
    """Was: ZeroDivisionError in the training loop (0 batches per epoch), exit 1."""
    config = _iris(tmp_path)
    config["data"].update(batch_size=512, drop_remainder=True)
    done, path = _train_cli(tmp_path, config)
    assert_user_error(done, f"c.yaml:{_line(path, 'batch_size')}: data.batch_size: a batch of "
                      "512 is more than the 96 training examples")


def test_class_weights_that_are_all_zero_are_refused(tmp_path: Path) -> None:
    """Was: a run with loss 0.0 every epoch that trained nothing, exit 0."""
    config = _iris(tmp_path, train={"epochs": 1, "class_weight": {0: 0, 1: 0, 2: 0.0}})
    issue = _one(tmp_path, config)
    assert issue.path == ("train", "class_weight")
    assert "every class of this model (3) weighs 0" in issue.message
