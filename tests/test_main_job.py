"""The main job end to end through the real CLI: train on the shipped digits, then evaluate,
predict and load the artifacts with plain Keras in fresh processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import DATA, cli, only_run, shipped, write_config

MANIFEST_FIELDS = {
    "kexp_version", "command", "config_hash", "seed", "data_files", "git", "started_at",
    "ended_at", "status", "environment", "strategy", "epochs_completed", "final_metrics",
}
ENVIRONMENT_FIELDS = {"python", "os", "cpu", "memory", "versions", "tensorflow_build", "devices",
                      "packages"}

LOAD_AND_PREDICT = """
import json, sys
import numpy as np
import keras
model = keras.models.load_model(sys.argv[1])
data = np.load(sys.argv[2])
x, y = data["images"], data["labels"]
np.save(sys.argv[3], model.predict(x, verbose=0))
scores = model.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
opt = model.optimizer
print(json.dumps({"optimizer": type(opt).__name__, "iterations": int(opt.iterations),
                  "learning_rate": float(opt.learning_rate),
                  "scores": {k: float(v) for k, v in scores.items()}}))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One CLI training run of the digits CNN (2 epochs, AdamW) shared by this module."""
    tmp = tmp_path_factory.mktemp("main")
    config = shipped(
        "digits_cnn.yaml",
        train={"epochs": 2},
        compile={"optimizer": {"AdamW": {"learning_rate": 0.002}},
                 "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
        callbacks=[{"EarlyStopping": {"monitor": "val_loss", "patience": 5}},
                   {"ReduceLROnPlateau": {"monitor": "val_loss", "patience": 3}}],
        output={"root": str(tmp / "experiments")},
    )
    path = write_config(tmp / "digits.yaml", config)
    done = cli(["train", path])
    assert done.returncode == 0, done.stdout + done.stderr
    return only_run(tmp / "experiments")


def test_run_directory_has_every_artifact(run: Path) -> None:
    for name in ("config.yaml", "manifest.json", "model.keras", "model.h5", "history.csv",
                 "evaluation.json", "splits.npz", "checkpoints/best.keras",
                 "checkpoints/last.keras"):
        assert (run / name).is_file(), name
    assert any((run / "logs").rglob("events.out.tfevents.*")), "no TensorBoard events"
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch") and len(history) == 3  # header + 2 epochs
    assert not list(run.rglob(".*.tmp*")), "temporary files left behind"


def test_saved_config_is_resolved_and_reloadable(run: Path) -> None:
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["seed"] == 42
    assert saved["data"]["batch_size"] == 32
    assert Path(saved["data"]["train"]["path"]).is_absolute()
    assert saved["output"]["formats"] == ["keras", "h5"]


def test_manifest_has_every_field(run: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    assert MANIFEST_FIELDS <= set(manifest)
    assert ENVIRONMENT_FIELDS <= set(manifest["environment"])
    assert manifest["status"] == "completed"
    assert manifest["epochs_completed"] == 2
    assert manifest["seed"] == 42
    assert manifest["command"][-1].endswith("digits.yaml")
    files = manifest["data_files"]
    assert {Path(f).name for f in files} == {"digits_train.npz", "digits_test.npz"}
    import hashlib
    for file, digest in files.items():
        assert hashlib.sha256(Path(file).read_bytes()).hexdigest() == digest
    assert manifest["git"] is None  # the test's config is not in a git repository
    assert manifest["strategy"]["replicas"] == 1
    versions = manifest["environment"]["versions"]
    assert versions["tensorflow"] and versions["keras"] and versions["h5py"]


@pytest.mark.parametrize("artifact", ["model.keras", "model.h5"])
def test_artifacts_load_in_a_fresh_process_with_plain_keras(run: Path, artifact: str, tmp_path) -> None:
    out = tmp_path / "pred.npy"
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(run / artifact),
         str(DATA / "digits_test.npz"), str(out)],
        capture_output=True, text=True, env={"TF_CPP_MIN_LOG_LEVEL": "3",
                                             "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["optimizer"] == "AdamW"
    assert info["iterations"] > 0
    # the saved predictions agree with what the trained model measured on the test split
    predictions = np.load(out)
    labels = np.load(DATA / "digits_test.npz")["labels"]
    accuracy = float((predictions.argmax(1) == labels).mean())
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert accuracy == pytest.approx(evaluation["metrics"]["accuracy"], abs=1e-6)
    # and the reloaded model (architecture, weights, compiled loss with its regularization)
    # measures the trained model's test loss, not merely the same argmax
    for name, value in evaluation["metrics"].items():
        assert info["scores"][name] == pytest.approx(value, rel=1e-5), name


def test_keras_and_h5_predict_identically(run: Path) -> None:
    from kexp.tf import keras

    x = np.load(DATA / "digits_test.npz")["images"][:64]
    a = keras.models.load_model(run / "model.keras").predict(x, verbose=0)
    b = keras.models.load_model(run / "model.h5").predict(x, verbose=0)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_h5_holds_architecture_weights_and_optimizer_state(run: Path) -> None:
    import h5py

    with h5py.File(run / "model.h5") as f:
        assert "model_config" in f.attrs and "training_config" in f.attrs
        assert "model_weights" in f
        names = []
        f["optimizer_weights"].visit(names.append)
    # AdamW keeps a momentum and a velocity per trainable variable, and its iteration count
    assert any(n.endswith("_momentum") for n in names)
    assert any(n.endswith("_velocity") for n in names)
    assert any(n.endswith("iteration") for n in names)


def test_kexp_loads_the_same_optimizer_state_from_h5_as_from_keras(run: Path) -> None:
    import kexp

    native = kexp.load_model(run / "model.keras").optimizer.variables
    legacy = kexp.load_model(run / "model.h5").optimizer.variables
    assert len(legacy) == len(native) > 2  # iterations, learning rate and AdamW's slots
    for a, b in zip(native, legacy):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_evaluate_agrees_with_training(run: Path) -> None:
    done = cli(["evaluate", run, "--json"])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    trained = json.loads((run / "evaluation.json").read_text())["metrics"]
    for name, value in trained.items():
        assert result["metrics"][name] == pytest.approx(value, rel=1e-5)
    assert result["examples"] == 359
    assert list((run / "evaluations").glob("*.json")), "evaluate wrote no JSON"
    assert (run / "evaluation.json").read_text()  # the training-time record is kept


def test_evaluations_in_the_same_second_each_keep_their_record(run: Path) -> None:
    """Was: records were named by the second, and a later evaluation from Python in the same
    second replaced the earlier one's (3 records of 6 evaluations)."""
    import io

    from rich.console import Console

    import kexp
    from kexp.manifest import now

    folder = run / "evaluations"
    before = set(folder.glob("*.json")) if folder.exists() else set()
    quiet = Console(file=io.StringIO())
    stamp = now()
    while now() == stamp:  # start at a new second: three evaluations then share one
        pass
    results = [kexp.evaluate(run, out=quiet) for _ in range(3)]
    new = sorted(set(folder.glob("*.json")) - before)
    assert len(new) == 3, new
    assert all(json.loads(path.read_text()) in results for path in new)
    assert {json.loads(path.read_text())["model"] for path in new} == {
        str((run / "model.keras").absolute())}


def test_evaluate_model_file_with_data_option(run: Path) -> None:
    done = cli(["evaluate", run / "model.h5", "--data", DATA / "digits_test.npz",
                "--x", "images", "--y", "labels", "--json"])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    trained = json.loads((run / "evaluation.json").read_text())["metrics"]
    assert result["metrics"]["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-6)


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_predict_writes_probabilities_and_labels(run: Path, tmp_path, suffix: str) -> None:
    from kexp.tf import keras

    output = tmp_path / f"predictions{suffix}"
    done = cli(["predict", run, "--input", DATA / "digits_test.npz", "--output", output])
    assert done.returncode == 0, done.stderr
    x = np.load(DATA / "digits_test.npz")["images"]
    expected = keras.models.load_model(run / "model.keras").predict(x, verbose=0)
    if suffix == ".csv":
        import csv

        rows = list(csv.DictReader(output.open()))
        assert len(rows) == len(x)
        probs = np.array([[float(r[f"prob_{i}"]) for i in range(10)] for r in rows])
        labels = np.array([int(r["predicted_label"]) for r in rows])
    else:
        saved = np.load(output)
        probs = np.stack([saved[f"prob_{i}"] for i in range(10)], axis=1)
        labels = saved["predicted_label"]
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    np.testing.assert_array_equal(labels, expected.argmax(1))


def test_predict_to_stdout(run: Path) -> None:
    done = cli(["predict", run, "--input", DATA / "digits_test.npz"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].endswith("predicted_label") and len(lines) == 360


def test_second_run_gets_a_new_directory(run: Path, tmp_path) -> None:
    """Training the same config again never touches the earlier run."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train"]["epochs"] = 1
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    done = cli(["train", write_config(tmp_path / "again.yaml", config)])
    assert done.returncode == 0, done.stderr
    runs = sorted(p for p in run.parent.iterdir() if p.is_dir())
    assert len(runs) == 2
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before


def test_git_state_of_the_config_repository(tmp_path) -> None:
    from kexp.manifest import git_state

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    config = tmp_path / "c.yaml"
    config.write_text("name: x\n")
    git("add", "c.yaml")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "c")
    state = git_state(config)
    assert state["commit"] and len(state["commit"]) == 40 and state["dirty"] is False
    config.write_text("name: y\n")
    assert git_state(config)["dirty"] is True
    assert git_state(Path("/")) is None
