"""Multi-worker training for real: two worker processes on localhost ports.

1. ``kexp`` trains the same config (``hardware.cluster.workers`` + ``KEXP_TASK_INDEX``, no
   seed: the chief's is shared) in both workers; both finish with identical weights, only the
   chief leaves a run directory, and its artifacts load and evaluate.
2. The canary: plain Keras ``Model.fit`` under ``MultiWorkerMirroredStrategy`` with each half
   of kexp's workaround left out in turn must still fail the way keras-team/keras#20585
   describes (for each half its version guard says is needed). The day one passes, this test
   fails and names the half whose ``FIXED_IN`` to set in kexp/hardware/keras_20585.py; a half
   marked fixed must keep working without its patch.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
from rich.console import Console

from conftest import REPO, only_run, shipped, write_config

WORKER = r"""
import json, sys
import numpy as np
from kexp.training.run import train

run = train(sys.argv[1])
np.savez(sys.argv[2], *run.model.get_weights())
print("RESULT " + json.dumps({"directory": str(run.directory), "seed": run.config.seed,
                              "exists": run.directory.exists(), "history": run.history}))
"""

CANARY = r"""
import json, os
import numpy as np
import tensorflow as tf
import keras
from kexp.hardware import keras_20585

strategy = tf.distribute.MultiWorkerMirroredStrategy()
x = np.linspace(0, 1, 64 * 4, dtype="float32").reshape(64, 4)
y = (x.sum(axis=1) > 2).astype("int32")
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).with_options(options)


def fit():
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    try:
        model.fit(data, epochs=1, verbose=0)
    except Exception as exc:
        return type(exc).__name__ + ": " + " ".join(str(exc).split())[:400]
    return "ok"


results = {"keras": keras.__version__,
           "needed": {half: keras_20585.needed(keras.__version__, half)
                      for half in keras_20585.HALVES}}
keras_20585.install(("reduce",))  # the symbolic-build half left out
results["without_symbolic_build"] = fit()
keras_20585.uninstall()
keras_20585.install(("symbolic_build",))  # the reduce half left out
results["without_reduce"] = fit()
keras_20585.install()  # as kexp installs it
results["patched"] = fit()
print("RESULT " + json.dumps(results), flush=True)
"""

#: How each half of keras-team/keras#20585 shows when its patch is left out.
SYMPTOMS = {
    "symbolic_build": "PerReplica",
    "reduce": "Invalid reduction dimension 0 for input with 0 dimensions",
}


def canary_problems(result: dict[str, Any]) -> list[str]:
    """What the canary's outcome asks of kexp/hardware/keras_20585.py (nothing: all is well)."""
    from kexp.hardware.keras_20585 import _version

    version = result["keras"]
    module = "kexp/hardware/keras_20585.py"
    fixed_now = [half for half in SYMPTOMS
                 if result["needed"][half] and result[f"without_{half}"] == "ok"]
    problems = []
    for half in SYMPTOMS:
        outcome = result[f"without_{half}"]
        if not result["needed"][half]:
            if outcome != "ok":
                problems.append(
                    f"FIXED_IN[{half!r}] in {module} says Keras {version} no longer needs the "
                    f"{half} half, but Model.fit fails without it: {outcome}")
        elif half in fixed_now:
            problems.append(
                f"keras-team/keras#20585: the {half} half looks fixed in Keras {version} "
                "(Model.fit under MultiWorkerMirroredStrategy ran without kexp's patch of "
                f"it): set FIXED_IN[{half!r}] = {_version(version)} in {module}")
        elif SYMPTOMS[half] not in outcome:
            problems.append(f"without the {half} half, Keras {version} fails differently "
                            f"now (expected {SYMPTOMS[half]!r}): {outcome}")
    if fixed_now and all(half in fixed_now or not result["needed"][half] for half in SYMPTOMS):
        problems.append("with that, no half is needed from this Keras on: delete the module "
                        "and its install() call in kexp/hardware/strategy.py once kexp "
                        "requires this Keras")
    if result["patched"] != "ok":
        problems.append(f"with kexp's patch Model.fit still fails: {result['patched']}")
    return problems


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def run_workers(code: str, args: Sequence[Sequence[str]], envs: Sequence[dict[str, str]],
                timeout: float = 240) -> list[dict[str, Any]]:
    """Start one process per worker; all must finish (a lone worker would wait forever)."""
    procs = [
        subprocess.Popen([sys.executable, "-c", code, *a], cwd=REPO, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **e})
        for a, e in zip(args, envs)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    results = []
    for index, (proc, (stdout, stderr)) in enumerate(zip(procs, outputs)):
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, f"worker {index}:\n{stdout}\n{stderr}"
        results.append(json.loads(lines[-1][len("RESULT "):]))
    return results


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("multiworker")
    workers = [f"localhost:{port}" for port in free_ports(2)]
    config = shipped("iris_mlp.yaml", train={"epochs": 2},
                     output={"root": str(tmp / "experiments")},
                     hardware={"strategy": "multi_worker_mirrored",
                               "cluster": {"workers": workers}})
    config.pop("seed")  # the workers must agree on a drawn seed
    path = write_config(tmp / "iris.yaml", config)
    results = run_workers(
        WORKER,
        [[str(path), str(tmp / f"weights{i}.npz")] for i in range(2)],
        [{"KEXP_TASK_INDEX": str(i)} for i in range(2)],
    )
    weights = []
    for i in range(2):
        with np.load(tmp / f"weights{i}.npz") as stored:
            weights.append([stored[k] for k in sorted(stored.files, key=lambda k: int(k[4:]))])
    return {"tmp": tmp, "results": results, "weights": weights, "workers": workers}


def test_both_workers_finish_with_identical_weights(trained: dict[str, Any]) -> None:
    chief, other = trained["results"]
    assert chief["seed"] == other["seed"]
    assert chief["history"] == other["history"]  # all-reduced logs: callbacks agree
    assert len(chief["history"]["loss"]) == 2
    for a, b in zip(*trained["weights"]):
        np.testing.assert_array_equal(a, b)


def test_only_the_chief_leaves_a_run_directory(trained: dict[str, Any]) -> None:
    chief, other = trained["results"]
    run = only_run(trained["tmp"] / "experiments")
    assert Path(chief["directory"]) == run and chief["exists"]
    assert not other["exists"] and not Path(other["directory"]).exists()
    assert not Path(other["directory"]).is_relative_to(trained["tmp"])
    manifest = json.loads((run / "manifest.json").read_text())
    strategy = manifest["strategy"]
    assert manifest["status"] == "completed" and manifest["seed"] == chief["seed"]
    assert (strategy["name"], strategy["replicas"]) == ("multi_worker_mirrored", 2)
    assert strategy["cluster"] == {"source": "workers", "cluster": {"worker": trained["workers"]},
                                   "task": {"type": "worker", "index": 0}, "chief": True}
    assert strategy["keras_workaround"]["issue"] == "keras-team/keras#20585"
    assert strategy["batch"]["global"] == 16 and strategy["batch"]["per_replica"] == 8


def test_chief_artifacts_load_and_evaluate(trained: dict[str, Any]) -> None:
    from kexp.evaluation import evaluate
    from kexp.tf import keras

    run = only_run(trained["tmp"] / "experiments")
    model = keras.models.load_model(run / "model.keras")
    for a, b in zip(model.get_weights(), trained["weights"][0]):
        np.testing.assert_array_equal(a, b)
    keras.models.load_model(run / "model.h5")
    metrics = evaluate(run, out=Console(file=io.StringIO()))["metrics"]
    stored = json.loads((run / "evaluation.json").read_text())["metrics"]
    assert metrics["accuracy"] == pytest.approx(stored["accuracy"], abs=1e-6)
    assert (run / "checkpoints").is_dir() and (run / "history.csv").is_file()


def test_a_worker_whose_peer_never_starts_gives_up(tmp_path: Path) -> None:
    """TensorFlow alone waits forever (and ignores Ctrl-C and SIGTERM) for a missing worker;
    worker 0 (the coordination leader) and worker 1 each alone must stop with exit 2."""
    import time

    procs = []
    for index in range(2):  # two separate clusters, each with only this worker started
        workers = [f"localhost:{port}" for port in free_ports(2)]
        config = shipped("iris_mlp.yaml", train={"epochs": 1},
                         output={"root": str(tmp_path / "experiments")},
                         hardware={"strategy": "multi_worker_mirrored",
                                   "cluster": {"workers": workers, "start_timeout": 3}})
        path = write_config(tmp_path / f"alone{index}.yaml", config)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "kexp", "train", str(path)], cwd=REPO, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KEXP_TASK_INDEX": str(index)}))
    start = time.monotonic()
    try:
        outputs = [proc.communicate(timeout=240) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert time.monotonic() - start < 180
    for index, (proc, (stdout, stderr)) in enumerate(zip(procs, outputs)):
        text = stdout + stderr
        assert proc.returncode == 2 and "Traceback" not in text, text
        assert f"alone{index}.yaml:" in text and "hardware.cluster.workers: not all 2 workers " \
            f"of hardware.cluster.workers joined within 3 s (this is worker {index})" in text
        assert "hardware.cluster.start_timeout" in text
    assert not (tmp_path / "experiments").exists()


def test_upstream_keras_20585_still_needs_the_workaround() -> None:
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    envs = [{"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                   "index": i}})}
            for i in range(2)]
    results = run_workers(CANARY, [[], []], envs)
    for result in results:
        problems = canary_problems(result)
        assert not problems, "\n".join(problems)


NOW = {"keras": "3.15.1", "needed": {"symbolic_build": True, "reduce": True},
       "without_symbolic_build": "ValueError: Attempt to convert a value (PerReplica:{...})",
       "without_reduce": "InvalidArgumentError: Invalid reduction dimension 0 for input with "
                         "0 dimensions", "patched": "ok"}


@pytest.mark.parametrize("change, expected", [
    ({}, []),
    ({"without_reduce": "ok"}, ["the reduce half looks fixed in Keras 3.15.1",
                                "set FIXED_IN['reduce'] = (3, 15)"]),
    ({"without_symbolic_build": "ok"}, ["the symbolic_build half looks fixed",
                                        "set FIXED_IN['symbolic_build'] = (3, 15)"]),
    ({"needed": {"symbolic_build": True, "reduce": False}, "without_reduce": "ok"}, []),
    ({"needed": {"symbolic_build": True, "reduce": False}},
     ["FIXED_IN['reduce'] in kexp/hardware/keras_20585.py says Keras 3.15.1 no longer needs"]),
    ({"needed": {"symbolic_build": True, "reduce": False}, "without_reduce": "ok",
      "without_symbolic_build": "ok"}, ["FIXED_IN['symbolic_build'] = (3, 15)",
                                        "no half is needed from this Keras on: delete the module"]),
    ({"without_reduce": "RuntimeError: something else"}, ["fails differently now"]),
    ({"patched": "ValueError: x"}, ["with kexp's patch Model.fit still fails"]),
])
def test_canary_names_the_half_to_drop(change: dict[str, Any], expected: list[str]) -> None:
    problems = canary_problems({**NOW, **change})
    assert bool(problems) is bool(expected), problems
    text = "\n".join(problems)
    for fragment in expected:
        assert fragment in text, text
    if "without_reduce" in change and change["without_reduce"] == "ok" and "needed" not in change:
        assert "symbolic_build" not in text  # only the half that upstream fixed
