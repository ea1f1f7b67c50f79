"""MirroredStrategy for real on 2 logical CPU devices (``hardware.cpu_devices: 2``).

The CPU can only be split before TensorFlow starts its devices, so the runs happen in one
fresh process: a single-device run, a mirrored run at the same global batch, and a mirrored
run given the batch per replica (picked by ``strategy: auto``); the losses and final weights
must agree. A global batch that does not split over the replicas must be refused.

With 99 training examples and a global batch of 16, each epoch ends with a batch of 3 that
the 2 replicas share 2/1: Keras weights the replicas' mean losses equally, so that step
differs from a single device's. kexp warns and notes it; with ``data.drop_remainder: true``
the runs match again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import REPO, shipped, write_config

SCRIPT = r"""
import io, json, sys, warnings
import yaml
from rich.console import Console
from kexp.errors import ConfigError, ConfigWarning
from kexp.training.run import train

results = {}
for path in sys.argv[1:]:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run = train(path, out=Console(file=io.StringIO()))
    except ConfigError as exc:
        results[path] = {"error": str(exc)}
        continue
    results[path] = {
        "warnings": [str(w.message) for w in caught if issubclass(w.category, ConfigWarning)],
        "history": run.history,
        "weights": [w.tolist() for w in run.model.get_weights()],
        "manifest": json.loads((run.directory / "manifest.json").read_text()),
        "config": yaml.safe_load((run.directory / "config.yaml").read_text()),
    }
print("RESULTS " + json.dumps(results))
"""


def config(tmp_path: Path, name: str, batch: int, data: dict | None = None,
           **hardware: Any) -> Path:
    config = shipped("iris_mlp.yaml", train={"epochs": 2}, callbacks=[],
                     output={"root": str(tmp_path / "experiments"), "tensorboard": False,
                             "formats": ["keras"]},
                     hardware={"cpu_devices": 2, **hardware})
    config["data"].update(batch_size=batch, **(data or {}))
    return write_config(tmp_path / f"{name}.yaml", config)


#: 120 shipped training rows - 21 for validation = 99 = 6 x 16 + 3
ODD = {"validation": {"split": 0.175}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("mirrored")
    paths = {
        "single": config(tmp, "single", 16, strategy="one_device"),
        "mirrored": config(tmp, "mirrored", 16, strategy="mirrored"),
        "per_replica": config(tmp, "per_replica", 8, batch_per_replica=True),  # auto
        "indivisible": config(tmp, "indivisible", 15, strategy="mirrored"),
        "odd_single": config(tmp, "odd_single", 16, ODD, strategy="one_device"),
        "odd_mirrored": config(tmp, "odd_mirrored", 16, ODD, strategy="mirrored"),
        "odd_single_drop": config(tmp, "odd_single_drop", 16, {**ODD, "drop_remainder": True},
                                  strategy="one_device"),
        "odd_mirrored_drop": config(tmp, "odd_mirrored_drop", 16,
                                    {**ODD, "drop_remainder": True}, strategy="mirrored"),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *map(str, paths.values())],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**{k: v for k, v in os.environ.items()
                if k not in ("TF_CONFIG", "KEXP_TASK_INDEX") and not k.startswith("SLURM_")},
             "TF_CPP_MIN_LOG_LEVEL": "3"},  # auto must not see a cluster from outside
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert done.returncode == 0 and lines, done.stdout + done.stderr
    results = json.loads(lines[-1][len("RESULTS "):])
    return {name: results[str(path)] for name, path in paths.items()}


def test_mirrored_runs_on_two_replicas(runs: dict[str, Any]) -> None:
    strategy = runs["mirrored"]["manifest"]["strategy"]
    assert (strategy["name"], strategy["replicas"], strategy["class"]) == (
        "mirrored", 2, "MirroredStrategy")
    assert [d.rsplit("/", 1)[-1] for d in strategy["devices"]] == ["device:CPU:0",
                                                                   "device:CPU:1"]
    assert strategy["batch"] == {"global": 16, "per_replica": 8, "replicas": 2,
                                 "given_as": "global"}
    assert runs["single"]["manifest"]["strategy"]["replicas"] == 1


@pytest.mark.parametrize("other", ["mirrored", "per_replica"])
def test_loss_curve_and_weights_match_a_single_device(runs: dict[str, Any], other: str) -> None:
    single, mirrored = runs["single"], runs[other]
    for key in ("loss", "val_loss", "accuracy"):
        np.testing.assert_allclose(mirrored["history"][key], single["history"][key],
                                   rtol=1e-5, atol=1e-6, err_msg=key)
    for a, b in zip(single["weights"], mirrored["weights"]):
        np.testing.assert_allclose(np.array(b), np.array(a), atol=1e-5)


def test_auto_picks_mirrored_and_the_batch_per_replica_becomes_global(
        runs: dict[str, Any]) -> None:
    manifest = runs["per_replica"]["manifest"]
    assert manifest["strategy"]["name"] == "mirrored"
    assert manifest["strategy"]["batch"] == {"global": 16, "per_replica": 8, "replicas": 2,
                                             "given_as": "per_replica"}
    # the saved config holds the global batch actually used, so a rerun repeats the run
    saved = runs["per_replica"]["config"]
    assert saved["data"]["batch_size"] == 16 and saved["hardware"]["batch_per_replica"] is False


def test_indivisible_global_batch_is_refused(runs: dict[str, Any]) -> None:
    error = runs["indivisible"]["error"]
    assert "data.batch_size: the global batch size 15 does not split over the 2 replicas " \
           "of the mirrored strategy" in error
    assert "14 or 16" in error and "indivisible.yaml:" in error


def test_an_unevenly_split_last_batch_is_warned_and_noted(runs: dict[str, Any]) -> None:
    (warning,) = runs["odd_mirrored"]["warnings"]
    assert "odd_mirrored.yaml:" in warning and "data.batch_size: the last training batch of " \
        "each epoch (3 examples) is split unevenly over the 2 replicas (99 = 6 x 16 + 3)" in warning
    assert "data.drop_remainder: true" in warning
    notes = runs["odd_mirrored"]["manifest"]["strategy"]["notes"]
    assert any("split unevenly over the 2 replicas" in note for note in notes), notes
    for quiet in ("odd_single", "odd_mirrored_drop", "mirrored"):  # 96 = 6 x 16: no remainder
        assert runs[quiet]["warnings"] == [], quiet
        assert "notes" not in runs[quiet]["manifest"]["strategy"], quiet


def test_an_unevenly_split_last_batch_is_why_mirrored_differs(runs: dict[str, Any]) -> None:
    """What the warning says, measured: the uneven step makes the runs differ (the day Keras
    weights replicas by their examples, this fails: then drop the warning), and dropping
    the remainder makes them match."""
    def gap(a: str, b: str) -> float:
        return max(float(np.abs(np.array(x) - np.array(y)).max())
                   for x, y in zip(runs[a]["weights"], runs[b]["weights"]))

    assert gap("odd_single", "odd_mirrored") > 1e-3
    assert gap("odd_single_drop", "odd_mirrored_drop") < 1e-5
    np.testing.assert_allclose(runs["odd_mirrored_drop"]["history"]["loss"],
                               runs["odd_single_drop"]["history"]["loss"], rtol=1e-5)
