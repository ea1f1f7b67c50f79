"""Helpers shared by the reproducibility, resume and integrity tests.

The experiment is the shipped iris data (96 training examples after the validation split,
batch 16: 6 steps per epoch) with a model and callbacks chosen to carry every kind of state a
resume must restore: Dropout (a random generator), Adam (optimizer slots), ReduceLROnPlateau
(the learning rate and the callback's wait) and EarlyStopping with restore_best_weights (best
weights, restored at the end of training).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from conftest import REPO, shipped, write_config

HOOKS = Path(__file__).with_name("_kexp_hooks.py")
STEPS_PER_EPOCH = 6


def iris(tmp_path: Path, name: str = "iris.yaml", **overrides: Any) -> Path:
    """The test experiment as a config file; runs go under ``tmp_path/runs``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = shipped(
        "iris_mlp.yaml",
        train={"epochs": 4},
        callbacks=[
            {"EarlyStopping": {"monitor": "val_loss", "patience": 50,
                               "restore_best_weights": True}},
            {"ReduceLROnPlateau": {"monitor": "val_loss", "factor": 0.5, "patience": 1}},
        ],
        output={"root": str(tmp_path / "runs"), "formats": ["keras"], "tensorboard": False},
    )
    data["model"]["sequential"]["layers"] = [
        {"Dense": {"units": 16, "activation": "relu"}},
        {"Dropout": {"rate": 0.2}},
        {"Dense": {"units": 3, "activation": "softmax"}},
    ]
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return write_config(tmp_path / name, data)


def runs(root: Path) -> list[Path]:
    """Run directories under ``root`` (``<root>/<name>/<id>``), oldest first."""
    return sorted(p for p in Path(root).glob("*/*") if p.is_dir())


def manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "manifest.json").read_text())


def history(run_dir: Path) -> list[dict[str, str]]:
    with open(Path(run_dir) / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def saved_config(run_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((Path(run_dir) / "config.yaml").read_text())


def hooked(hook: str, args: Sequence[Any], timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m kexp ARGS`` with a test hook (see tests/_kexp_hooks.py), in a subprocess."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, str(HOOKS), hook, "--", *map(str, args)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


def popen_hooked(hook: str, args: Sequence[Any]) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        [sys.executable, str(HOOKS), hook, "--", *map(str, args)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
