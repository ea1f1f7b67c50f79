"""Callbacks across training stages, monitor names, and callback arguments that are functions.

A ``freeze:`` run is two ``fit`` calls (frozen, then unfrozen and recompiled); the callbacks
must see one training: TensorBoard keeps writing, a CSVLogger keeps its rows, EarlyStopping and
ReduceLROnPlateau keep counting. A ``monitor`` that names nothing the model logs, and a
callback argument that must be a function, are config errors before any run directory exists.
"""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from conftest import REPO, shipped, write_config
from kexp.config import load_config

PROBE = REPO / "tests" / "plugins" / "stage_probe.py"


def _iris(tmp_path: Path, **overrides: Any) -> dict:
    """Iris (6 steps per epoch), layers named for freezing; the default outputs (TensorBoard)."""
    config = shipped("iris_mlp.yaml", train={"epochs": 3}, callbacks=[],
                     output={"root": str(tmp_path / "runs"), "formats": ["keras"]})
    config["plugins"] = [str(PROBE)]
    config["model"]["sequential"]["layers"] = [
        {"Dense": {"units": 16, "activation": "relu", "name": "backbone_1"}},
        {"Dense": {"units": 3, "activation": "softmax", "name": "head"}},
    ]
    config.update(copy.deepcopy(overrides))
    return config


def _train(tmp_path: Path, config: dict, name: str = "c.yaml"):
    from kexp.training.run import train

    path = write_config(tmp_path / name, config)
    return train(load_config(path), output_root=tmp_path / "runs", out=Console(file=io.StringIO()))


def _events(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of TensorBoard event files in ``directory``: {tag: [(step, value)]}."""
    from kexp.tf import tf

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "scalars":
                    continue  # the model's config (text), the graph
                number = float(tf.make_ndarray(value.tensor))
                out.setdefault(value.tag, []).append((int(event.step), number))
    return out


def _probe() -> Any:
    import stage_probe  # imported by the run (a file plugin is named after its stem)

    return stage_probe


@pytest.mark.slow
@pytest.mark.parametrize("declared", [False, True], ids=["output.tensorboard", "callbacks"])
def test_tensorboard_logs_one_training_across_the_freeze_stages(tmp_path: Path,
                                                                declared: bool) -> None:
    """The default outputs (TensorBoard on), freeze.epochs 1 of 3: the run completes and the
    logs continue through stage 2 in the same event files, batch steps counted on."""
    config = _iris(tmp_path, freeze={"layers": ["backbone_*"], "epochs": 1},
                   callbacks=[{"StageProbe": {"key": f"tb-{declared}"}}])
    if declared:
        config["callbacks"].append({"TensorBoard": {"update_freq": "batch"}})
    run = _train(tmp_path, config)

    manifest = json.loads((run.directory / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["epochs_completed"] == 3
    train_files = list((run.directory / "logs" / "train").glob("events.out.tfevents.*"))
    assert len(train_files) == 1, train_files  # one writer for the whole run
    train, validation = (_events(run.directory / "logs" / d) for d in ("train", "validation"))
    assert [step for step, _ in train["epoch_loss"]] == [0, 1, 2]
    assert [step for step, _ in validation["epoch_loss"]] == [0, 1, 2]
    assert [v for _, v in train["epoch_loss"]] == pytest.approx(run.history["loss"], rel=1e-6)
    if declared:  # 6 steps per epoch: stage 2's batches go on from step 7, not from 1 again
        assert [step for step, _ in train["batch_loss"]] == list(range(1, 19))
    events = [e[0] for e in _probe().EVENTS[f"tb-{declared}"]]
    assert events.count("train_begin") == 1 and events[0] == "train_begin"
    assert events.count("train_end") == 1 and events[-1] == "train_end"


@pytest.mark.slow
def test_callbacks_keep_their_state_across_the_freeze_stages(tmp_path: Path) -> None:
    """A user CSVLogger keeps stage 1's rows (and the manifest counts every epoch); EarlyStopping
    and ReduceLROnPlateau count on through stage 2 and restore the best epoch of the run.

    ``min_delta: 100`` makes only the first epoch an improvement: one training waits 2 epochs
    (and EarlyStopping stops at the last), a reset at stage 2 would have waited 1."""
    config = _iris(tmp_path, freeze={"layers": ["backbone_*"], "epochs": 1})
    config["callbacks"] = [
        {"CSVLogger": {"filename": "log.csv"}},
        {"EarlyStopping": {"monitor": "loss", "patience": 2, "min_delta": 100,
                           "restore_best_weights": True}},
        {"ReduceLROnPlateau": {"monitor": "loss", "patience": 5, "min_delta": 100}},
        {"StageProbe": {"key": "state"}},
    ]
    run = _train(tmp_path, config)

    with open(run.directory / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    manifest = json.loads((run.directory / "manifest.json").read_text())
    assert manifest["epochs_completed"] == 3 and len(run.history["loss"]) == 3
    state = json.loads((run.directory / "backup" / "state.json").read_text())["callbacks"]
    early = state["EarlyStopping#0"]
    assert (early["wait"], early["best_epoch"], early["stopped_epoch"]) == (2, 0, 2)
    assert state["ReduceLROnPlateau#0"]["wait"] == 2
    # restore_best_weights at the end of the run: the best epoch is epoch 1 (in stage 1)
    end_of_first = next(e for e in _probe().EVENTS["state"] if e[:2] == ("epoch_end", 0))
    final = float(np.sum(run.model.get_layer("head").kernel.numpy()))
    assert final == pytest.approx(end_of_first[2], abs=1e-6)


@pytest.mark.slow
def test_early_stopping_ends_the_frozen_stage_then_fine_tuning_follows(tmp_path: Path) -> None:
    """EarlyStopping stops stage 1 at epoch 3 of 4: fine-tuning still follows, from the best
    weights (restore_best_weights), with its patience counted afresh (2 epochs, not 0)."""
    config = _iris(tmp_path, freeze={"layers": ["backbone_*"], "epochs": 4},
                   train={"epochs": 7})
    config["callbacks"] = [
        {"EarlyStopping": {"monitor": "loss", "patience": 2, "min_delta": 100,
                           "restore_best_weights": True}},
        {"StageProbe": {"key": "stopped"}},
    ]
    run = _train(tmp_path, config)

    lines = (run.directory / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2", "4", "5"]
    events = _probe().EVENTS["stopped"]
    best = next(e[2] for e in events if e[:2] == ("epoch_end", 0))
    fine_tuning_starts = next(e[2] for e in events if e[:2] == ("epoch_begin", 4))
    assert fine_tuning_starts == pytest.approx(best, abs=1e-6)
    assert [e[0] for e in events].count("train_begin") == 1


# ------------------------------------------------------------ callback arguments Keras calls


def _import_probe() -> Any:
    from kexp.plugins import import_plugin

    import_plugin(str(PROBE))
    return _probe()


def test_a_function_argument_names_a_plugin_function() -> None:
    from kexp.resolve import make_callback

    probe = _import_probe()
    for name in ("halve_each_epoch", "stage_probe>halve_each_epoch"):
        scheduler = make_callback({"LearningRateScheduler": {"schedule": name}}, ("callbacks", 0))
        assert scheduler.schedule is probe.halve_each_epoch
    hooks = make_callback({"LambdaCallback": {"on_epoch_end": "note_epoch"}}, ("callbacks", 1))
    assert hooks.on_epoch_end is probe.note_epoch


@pytest.mark.parametrize("kwargs, fragment, where", [
    ({"schedule": "lambda epoch, lr: lr * 0.9"}, "is no function a plugin defines", "schedule"),
    ({"schedule": "halve_each_epok"}, "did you mean 'halve_each_epoch'", "schedule"),
    ({"schedule": 0.1}, "give the name of a function a plugin defines", "schedule"),
    ({"schedule": "takes_nothing"}, "cannot take (it is takes_nothing())", "schedule"),
    ({}, "LearningRateScheduler needs 'schedule'", None),
])
def test_function_argument_mistakes(kwargs: dict, fragment: str, where: str | None) -> None:
    from kexp.errors import ConfigError
    from kexp.resolve import make_callback

    _import_probe()
    with pytest.raises(ConfigError) as caught:
        make_callback({"LearningRateScheduler": kwargs}, ("callbacks", 2))
    (issue,) = caught.value.issues
    assert fragment in str(issue)
    assert issue.path == ("callbacks", 2, "LearningRateScheduler") + ((where,) if where else ())


def test_a_function_argument_that_is_no_plugin_function_is_refused_by_validate(
        tmp_path: Path) -> None:
    """``LambdaCallback: {on_epoch_end: print}`` validated as fine and then crashed at the
    first epoch end ('str' object is not callable): now exit 2 at its key path and line."""
    from conftest import assert_user_error, cli

    config = _iris(tmp_path, callbacks=[{"LambdaCallback": {"on_epoch_end": "print"}}])
    path = write_config(tmp_path / "c.yaml", config)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1)
                if "on_epoch_end" in text)
    done = cli(["validate", path])
    assert_user_error(done, f"c.yaml:{line}: callbacks[0].LambdaCallback.on_epoch_end:",
                      "LambdaCallback calls 'on_epoch_end' as a function",
                      "'print' is no function a plugin defines", "plugins:")


@pytest.mark.slow
def test_learning_rate_scheduler_and_lambda_callback_train_with_plugin_functions(
        tmp_path: Path) -> None:
    config = _iris(tmp_path, train={"epochs": 2},
                   callbacks=[{"LearningRateScheduler": {"schedule": "halve_each_epoch"}},
                              {"LambdaCallback": {"on_epoch_end": "note_epoch"}}])
    config["output"]["tensorboard"] = False
    _probe_events = _import_probe().EVENTS
    _probe_events.pop("lambda", None)
    run = _train(tmp_path, config)

    assert run.history["learning_rate"] == pytest.approx([0.02, 0.01])
    assert float(np.asarray(run.model.optimizer.learning_rate)) == pytest.approx(0.01)
    assert _probe_events["lambda"] == [("epoch_end", 0), ("epoch_end", 1)]


# ------------------------------------------------------------------------- monitor names


def _refused(tmp_path: Path, config: dict) -> list[Any]:
    """The issues ``kexp train`` reports for ``config``, having created no run directory."""
    from kexp.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        _train(tmp_path, config)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("manifest.json"))
    assert all(issue.line is not None for issue in caught.value.issues), caught.value
    return caught.value.issues


def test_every_monitor_must_name_a_logged_value(tmp_path: Path) -> None:
    config = _iris(tmp_path, checkpoint={"monitor": "val_los"})
    config["compile"]["metrics"] = ["accuracy", "mean_top"]
    config["callbacks"] = [
        {"EarlyStopping": {"monitor": "val_los"}},
        {"ReduceLROnPlateau": {"monitor": "val_acuracy"}},
        {"ModelCheckpoint": {"monitor": "val_acc", "save_best_only": True}},
        {"WatchMetric": {"monitor": "val_los"}},                      # a plugin's callback
        {"EarlyStopping": {"monitor": "val_mean_top"}},               # logged, no direction
        {"EarlyStopping": {"monitor": "val_mean_top", "mode": "max"}},
        {"EarlyStopping": {"monitor": "val_accuracy", "patience": 2}},
        {"ReduceLROnPlateau": {"monitor": "learning_rate", "mode": "min"}},  # logs it itself
    ]
    issues = {issue.path: issue for issue in _refused(tmp_path, config)}
    assert {path: issue.suggestion for path, issue in issues.items()} == {
        ("checkpoint", "monitor"): "val_loss",
        ("callbacks", 0, "EarlyStopping", "monitor"): "val_loss",
        ("callbacks", 1, "ReduceLROnPlateau", "monitor"): "val_accuracy",
        ("callbacks", 2, "ModelCheckpoint", "monitor"): "val_accuracy",
        ("callbacks", 3, "WatchMetric", "monitor"): "val_loss",
        ("callbacks", 4, "EarlyStopping"): None,
    }
    assert issues[("checkpoint", "monitor")].message.startswith(
        "the best checkpoint monitors 'val_los', which this run does not log; it logs ")
    message = issues[("callbacks", 0, "EarlyStopping", "monitor")].message
    assert "monitors 'val_los', which this run does not log" in message
    assert "val_mean_top" in message and "val_accuracy" in message  # what it does log
    assert "give mode: max or mode: min (probably min)" in str(
        issues[("callbacks", 4, "EarlyStopping")])


def test_a_default_monitor_without_validation_data_is_refused(tmp_path: Path) -> None:
    config = _iris(tmp_path, callbacks=[{"EarlyStopping": {"patience": 2}},
                                        {"ModelCheckpoint": {}}])  # (its monitor is unused)
    config["data"].pop("validation")
    config["checkpoint"] = {"monitor": "loss"}
    (issue,) = _refused(tmp_path, config)
    assert issue.path == ("callbacks", 0, "EarlyStopping")
    assert "monitors 'val_loss' (its default)" in issue.message
    assert "there is no validation data (data.validation)" in issue.message
    assert issue.suggestion == "loss"


def test_monitors_of_a_multi_output_model_use_the_output_names(tmp_path: Path) -> None:
    config = shipped("digits_two_output.yaml", train={"epochs": 1},
                     output={"root": str(tmp_path / "runs")})
    config["checkpoint"] = {"monitor": "val_parity_auc", "mode": "max"}
    config["callbacks"] = [{"EarlyStopping": {"monitor": "val_digit_acuracy", "mode": "max"}},
                           {"ReduceLROnPlateau": {"monitor": "val_parity_auc"}},
                           {"ReduceLROnPlateau": {"monitor": "val_parity_loss", "mode": "min"}}]
    misspelt, no_mode = _refused(tmp_path, config)
    assert misspelt.path == ("callbacks", 0, "EarlyStopping", "monitor")
    assert misspelt.suggestion == "val_digit_accuracy"
    # Keras 3 finds no direction for any metric of a multi-output model (a ValueError at the
    # first epoch end); the shipped configs give mode: max
    assert no_mode.path == ("callbacks", 1, "ReduceLROnPlateau")
    assert "give mode: max or mode: min (probably max)" in no_mode.message


def test_kexp_train_refuses_a_misspelt_monitor_before_the_run_directory(tmp_path: Path) -> None:
    """Was: a Keras ValueError traceback at the end of epoch 1, the run left failed."""
    from conftest import assert_user_error, cli

    config = _iris(tmp_path, callbacks=[{"EarlyStopping": {"monitor": "val_los"}}])
    path = write_config(tmp_path / "c.yaml", config)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "val_los" in text)
    done = cli(["train", path, "--output-root", tmp_path / "runs"])
    assert_user_error(done, f"c.yaml:{line}: callbacks[0].EarlyStopping.monitor: EarlyStopping "
                      "monitors 'val_los', which this run does not log",
                      "did you mean 'val_loss'?")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_validate_with_data_checks_monitors_and_labels_without_writing(tmp_path: Path) -> None:
    """Was: ``kexp validate`` passed a misspelled monitor (it never reads the data, and the
    names a run logs come from it); ``--data`` runs train's checks before the run directory."""
    from conftest import assert_user_error, cli

    config = _iris(tmp_path, callbacks=[{"EarlyStopping": {"monitor": "val_acuracy"}}])
    path = write_config(tmp_path / "c.yaml", config)
    plain = cli(["validate", path])
    assert plain.returncode == 0, plain.stderr
    assert "the data was not read: --data checks it" in " ".join(plain.stdout.split())
    done = cli(["validate", "--data", path])
    assert_user_error(done, "callbacks[0].EarlyStopping.monitor: EarlyStopping monitors "
                      "'val_acuracy', which this run does not log", "did you mean 'val_accuracy'?")
    config["callbacks"] = []
    config["compile"]["loss"] = "binary_crossentropy"  # iris has class ids 0-2
    assert_user_error(cli(["validate", "--data", write_config(path, config)]),
                      "compile.loss:", "[0, 1]")
    config["compile"]["loss"] = "sparse_categorical_crossentropy"
    config["data"]["train"]["path"] = str(tmp_path / "gone.csv")
    assert_user_error(cli(["validate", "--data", write_config(path, config)]),
                      "data.train.path: no such file or folder")
    config["data"]["train"]["path"] = str(REPO / "configs/data/iris_train.csv")
    done = cli(["validate", "--data", write_config(path, config)])
    assert done.returncode == 0, done.stderr
    assert "is valid, and so is its data" in " ".join(done.stdout.split())
    assert "backbone_1" in done.stdout  # the summary of the model checked
    assert not (tmp_path / "runs").exists()  # nothing written
