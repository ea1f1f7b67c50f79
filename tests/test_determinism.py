"""Seeds and determinism: the same config trains to bit-identical weights, and a config
without a seed gets one drawn, used and written into the run so it can be rerun."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from rich.console import Console

from _repro import history, iris, manifest, runs, saved_config


def _train(config: Path):
    from kexp.training.run import train

    return train(config, out=Console(file=io.StringIO()))


def _file_hash(path: Path) -> str:
    from kexp.runs import load_model
    from kexp.training.weights import weights_sha256

    return weights_sha256(load_model(path))


def test_two_deterministic_runs_have_bit_identical_weights(tmp_path: Path) -> None:
    config = iris(tmp_path, train={"epochs": 2})
    first, second = _train(config), _train(config)
    assert first.directory != second.directory
    a, b = manifest(first.directory), manifest(second.directory)
    # op determinism really was on in the process that trained (CPU runs here would be
    # bit-identical even without it, so equal weights alone would not show it)
    assert a["environment"]["numerics"]["op_determinism"] is True
    assert b["environment"]["numerics"]["op_determinism"] is True
    assert len(a["weights_sha256"]) == 64
    assert a["weights_sha256"] == b["weights_sha256"]
    # the recorded hash is the hash of the saved model, and the weights really are equal
    assert _file_hash(first.directory / "model.keras") == a["weights_sha256"]
    for x, y in zip(first.model.get_weights(), second.model.get_weights()):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()
    assert history(first.directory) == history(second.directory)
    assert a["final_metrics"] == b["final_metrics"] and a["test_metrics"] == b["test_metrics"]


def test_deterministic_false_turns_op_determinism_off_again(tmp_path: Path) -> None:
    # op determinism is process-wide: a run after a deterministic one (a notebook, a test
    # session) must train as its own config says
    from tensorflow.python.framework.config import is_op_determinism_enabled

    from kexp.tf import tf

    tf.config.experimental.enable_op_determinism()
    run = _train(iris(tmp_path, deterministic=False, train={"epochs": 1}))
    assert manifest(run.directory)["environment"]["numerics"]["op_determinism"] is False
    assert not is_op_determinism_enabled()


def test_a_seed_not_given_is_drawn_used_and_saved(tmp_path: Path) -> None:
    config = iris(tmp_path, seed=None, train={"epochs": 1})
    run = _train(config)
    seed = saved_config(run.directory)["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**31
    assert manifest(run.directory)["seed"] == seed
    # the saved config reruns the same run: same seed, same weights
    rerun = _train(run.directory / "config.yaml")
    assert saved_config(rerun.directory)["seed"] == seed
    assert manifest(rerun.directory)["weights_sha256"] == manifest(run.directory)["weights_sha256"]
    assert len(runs(tmp_path / "runs")) == 2


def test_weights_hash_ignores_names_but_not_values() -> None:
    from kexp.tf import keras
    from kexp.training.weights import weights_sha256

    def model(name: str):
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name=name)])

    a, b = model("first"), model("second")
    assert weights_sha256(a) == weights_sha256(b)
    kernel = a.layers[0].kernel
    kernel.assign(kernel.numpy() + np.float32(1e-7))
    assert weights_sha256(a) != weights_sha256(b)
    assert hashlib.sha256(b"").hexdigest() != weights_sha256(a)
