"""Hardware in real runs: mixed precision, XLA, the strategy record, validate without
connecting, TPU errors through the CLI, env-report, and the keras#20585 patch's delegation."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import yaml
from rich.console import Console

from conftest import DATA, assert_user_error, cli, shipped, write_config


@pytest.fixture(autouse=True)
def float32_policy() -> Iterator[None]:
    """The dtype policy is process-wide: leave it as the other tests expect it."""
    yield
    from kexp.tf import keras

    keras.mixed_precision.set_dtype_policy("float32")


def iris(tmp_path: Path, epochs: int = 1, **hardware: Any) -> Path:
    config = shipped("iris_mlp.yaml", train={"epochs": epochs}, callbacks=[],
                     output={"root": str(tmp_path / "experiments"), "tensorboard": False},
                     hardware=hardware)
    return write_config(tmp_path / "iris.yaml", config)


def train(path: Path) -> Any:
    from kexp.training.run import train as run_train

    return run_train(path, out=Console(file=io.StringIO()))


def manifest(run: Any) -> dict[str, Any]:
    return json.loads((run.directory / "manifest.json").read_text())


def iris_test_features() -> np.ndarray:
    import csv

    with open(DATA / "iris_test.csv") as fh:
        rows = list(csv.DictReader(fh))
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    return np.array([[float(r[n]) for n in names] for r in rows], dtype="float32")


# plain load_model of a float16 model under a float32 global policy drops the loss-scale
# optimizer state with this warning (docs/hardware.md); kexp's load_model below keeps it
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer:UserWarning")
@pytest.mark.parametrize("mode, policy, scaled", [
    ("float16", "mixed_float16", True),
    ("bfloat16", "mixed_bfloat16", False),
])
def test_mixed_precision_trains_saves_and_reloads(tmp_path: Path, mode: str, policy: str,
                                                  scaled: bool) -> None:
    from kexp.tf import keras

    run = train(iris(tmp_path, mixed_precision=mode))
    record = manifest(run)["strategy"]
    assert record["mixed_precision"] == mode
    assert record["precision"] == {"policy": policy, "output_dtypes": ["float32"],
                                   "loss_scaling": scaled}
    model = run.model
    assert [layer.dtype_policy.name for layer in model.layers] == [policy, policy, "float32"]
    assert model.layers[0].kernel.dtype == "float32"  # variables stay float32
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) is scaled
    assert np.isfinite(run.history["loss"]).all()

    x = iris_test_features()
    expected = model.predict(x, verbose=0)
    assert expected.dtype == np.float32
    keras.mixed_precision.set_dtype_policy("float32")  # reload must not depend on the global
    for fmt in ("keras", "h5"):
        loaded = keras.models.load_model(run.directory / f"model.{fmt}")
        assert loaded.layers[0].dtype_policy.name == policy
        assert loaded.layers[-1].dtype_policy.name == "float32"
        np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)

    # kexp evaluate and kexp predict load it without Keras' "Skipping variable loading for
    # optimizer" warning, and measure the trained model
    import warnings

    from kexp.evaluation import evaluate
    from kexp.prediction import predict

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = evaluate(run.directory, out=Console(file=io.StringIO()))["metrics"]
        columns = predict(run.directory, DATA / "iris_test.csv")
    assert [str(w.message) for w in caught if "Skipping" in str(w.message)] == []
    assert metrics["accuracy"] == pytest.approx(run.test_metrics["accuracy"], abs=1e-6)
    assert len(next(iter(columns.values()))) == len(x)
    assert keras.mixed_precision.dtype_policy().name == "float32"  # restored

    # to resume training, kexp's loader keeps the loss scaling and the optimizer state
    from kexp.hardware.precision import load_model

    resumed = load_model(run.directory / "model.keras")
    assert isinstance(resumed.optimizer, keras.optimizers.LossScaleOptimizer) is scaled
    assert len(resumed.optimizer.variables) == len(model.optimizer.variables)
    assert keras.mixed_precision.dtype_policy().name == "float32"  # restored


def test_float32_outputs_leaves_a_float32_model_alone() -> None:
    from kexp.hardware.precision import float32_outputs, set_policy
    from kexp.tf import keras

    def build() -> Any:
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="hidden"),
                                 keras.layers.Dense(2, activation="softmax", name="out")])

    set_policy("none")
    model = build()
    assert float32_outputs(model) is model
    set_policy("float16")
    model = build()
    trained = [np.full(w.shape, 0.5 + i, dtype=w.dtype) for i, w in enumerate(model.get_weights())]
    model.set_weights(trained)  # e.g. a pretrained backbone: must survive the rebuild
    cloned = float32_outputs(model)
    assert [layer.name for layer in cloned.layers] == ["hidden", "out"]
    assert [layer.compute_dtype for layer in cloned.layers] == ["float16", "float32"]
    for a, b in zip(cloned.get_weights(), trained):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def no_op_determinism() -> Iterator[None]:
    """Op determinism is process-wide and an earlier test's run may have turned it on."""
    from tensorflow.python.framework import config

    was = config.is_op_determinism_enabled()
    config.disable_op_determinism()
    yield
    if was:
        config.enable_op_determinism()


def test_xla_and_steps_per_execution_reach_compile_and_the_manifest(
        tmp_path: Path, no_op_determinism: None) -> None:
    path = iris(tmp_path, jit_compile=True, steps_per_execution=4)  # 8 steps an epoch
    config = yaml.safe_load(path.read_text())
    config["deterministic"] = False  # XLA and op determinism exclude each other
    config["data"].pop("validation")  # one function to compile with XLA is enough here
    config["data"].pop("test")
    run = train(write_config(path, config))
    assert run.model.jit_compile is True and run.model.steps_per_execution == 4
    record = manifest(run)["strategy"]
    assert record["jit_compile"] is True and record["steps_per_execution"] == 4
    assert np.isfinite(run.history["loss"]).all()


def test_steps_per_execution_that_does_not_divide_an_epoch_trains_the_epochs_steps(
        tmp_path: Path) -> None:
    """Keras runs whole executions: on kexp's endless stream of passes, 4 per execution over
    an epoch of 6 steps would train 8 a epoch. kexp runs the largest divisor (3), warns at
    the key and notes it; a freeze stage's recompile keeps it."""
    from kexp.errors import ConfigWarning
    from kexp.hardware.execution import steps_per_execution

    assert [steps_per_execution(4, n) for n in (39, 40, 7, 2)] == [3, 4, 1, 2]
    (tmp_path / "one").mkdir(), (tmp_path / "four").mkdir()
    baseline = train(iris(tmp_path / "one", epochs=2))
    per_epoch = int(baseline.model.optimizer.iterations) // 2
    assert per_epoch % 4, "the test needs an epoch that 4 does not divide"
    path = iris(tmp_path / "four", epochs=2, steps_per_execution=4)
    with pytest.warns(ConfigWarning, match=r"does not divide the \d+ steps of an epoch"):
        run = train(path)
    expected = steps_per_execution(4, per_epoch)
    assert run.model.steps_per_execution == expected
    assert int(run.model.optimizer.iterations) == 2 * per_epoch
    record = manifest(run)["strategy"]
    assert record["steps_per_execution"] == expected
    assert any("does not divide" in note for note in record["notes"])
    # the fine-tuning stage recompiles (a new optimizer): its one epoch, not one step more
    config = yaml.safe_load(path.read_text())
    config["freeze"] = {"layers": [0], "epochs": 1}
    with pytest.warns(ConfigWarning, match="does not divide"):
        staged = train(write_config(tmp_path / "staged.yaml", config))
    assert staged.model.steps_per_execution == expected
    assert int(staged.model.optimizer.iterations) == per_epoch


def test_xla_with_determinism_is_refused_not_silently_dropped(tmp_path: Path) -> None:
    from kexp.errors import ConfigError

    path = iris(tmp_path, jit_compile=True)  # the shipped iris config is deterministic
    with pytest.raises(ConfigError) as info:
        train(path)
    issue = info.value.issues[0]
    assert issue.path == ("hardware", "jit_compile") and issue.line is not None
    assert "XLA cannot run with deterministic: true" in issue.message


def test_strategy_record_of_a_plain_run(tmp_path: Path) -> None:
    from kexp.config import load_config
    from kexp.training.run import prepare

    config, info, _ = prepare(load_config(iris(tmp_path)))
    record = info.record()
    assert (record["name"], record["replicas"], record["class"]) == ("default", 1,
                                                                     "_DefaultDistributionStrategy")
    assert record["batch"] == {"global": 16, "per_replica": 16, "replicas": 1,
                               "given_as": "global"}
    assert record["precision"]["policy"] == "float32" and "keras_workaround" not in record
    _, info, _ = prepare(load_config(iris(tmp_path, strategy="one_device")))
    assert (info.name, info.replicas, info.devices) == (
        "one_device", 1, ["/job:localhost/replica:0/task:0/device:CPU:0"])
    assert info.is_chief and "1 replica(s)" in info.summary()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def test_validate_does_not_join_the_cluster(tmp_path: Path) -> None:
    from kexp.config import load_config
    from kexp.training.run import prepare

    port = free_port()
    path = iris(tmp_path, strategy="multi_worker_mirrored",
                cluster={"workers": [f"localhost:{port}", "localhost:1"], "task_index": 0})
    _, info, model = prepare(load_config(path), connect=False)
    assert (info.name, info.connected) == ("multi_worker_mirrored", False)
    assert model.built
    with socket.socket() as sock:  # no gRPC server was started on the worker's port
        sock.bind(("localhost", port))


@pytest.fixture
def not_the_chief(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Make ``train`` run as worker 1 of 2 (without joining a cluster); yields its scratch
    directories."""
    from kexp.hardware.cluster import ClusterInfo, scratch_root
    from kexp.training import run as run_module

    real_prepare, created = run_module.prepare, []

    def prepare(loaded: Any, **kwargs: Any) -> Any:
        config, info, model = real_prepare(loaded, **kwargs)
        info.cluster = ClusterInfo("workers", {"worker": ["a:1", "b:2"]}, "worker", 1)
        return config, info, model

    def scratch(cluster: Any) -> Path:
        created.append(scratch_root(cluster))
        return created[-1]

    monkeypatch.setattr(run_module, "prepare", prepare)
    monkeypatch.setattr(run_module, "scratch_root", scratch)
    return created


def test_a_worker_removes_its_scratch_even_when_the_run_directory_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, not_the_chief: list[Path]) -> None:
    from kexp.training import rundir

    def fails(*args: Any) -> Path:
        raise OSError("No space left on device")

    monkeypatch.setattr(rundir, "new_run_dir", fails)
    with pytest.raises(OSError, match="No space left"):
        train(iris(tmp_path))
    assert len(not_the_chief) == 1 and not not_the_chief[0].exists()


@pytest.mark.slow
def test_a_worker_does_not_claim_to_have_saved_its_scratch_copy(
        tmp_path: Path, not_the_chief: list[Path]) -> None:
    from kexp.training.run import train as run_train

    text = io.StringIO()
    run = run_train(iris(tmp_path), out=Console(file=text, width=200))
    shown = text.getvalue()
    assert run.status == "completed" and not run.directory.exists()
    assert not not_the_chief[0].exists() and not (tmp_path / "experiments").exists()
    assert "saved:" not in shown, shown
    assert "done: the chief wrote the run directory; this worker's scratch copy is removed" \
        in shown
    assert "this worker's scratch copy of the run (removed at the end" in shown


def test_cpu_devices_after_tensorflow_started_is_an_error() -> None:
    from kexp.config.schema.hardware import HardwareSection
    from kexp.errors import ConfigError
    from kexp.hardware.devices import configure_devices
    from kexp.tf import tf

    count = len(tf.config.list_logical_devices("CPU"))  # TensorFlow has started here
    configure_devices(HardwareSection(cpu_devices=count))  # what it already has: fine
    with pytest.raises(ConfigError) as info:
        configure_devices(HardwareSection(cpu_devices=count + 1))
    assert info.value.issues[0].path == ("hardware", "cpu_devices")
    assert "before TensorFlow starts" in str(info.value)


def test_missing_tpu_stops_the_cli_with_exit_2(tmp_path: Path) -> None:
    path = iris(tmp_path, tpu="local")
    lines = path.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.strip().startswith("tpu:"))
    done = cli(["train", path])
    assert_user_error(done, "hardware.tpu", "cannot initialise the TPU 'local'",
                      f"iris.yaml:{line}")
    assert not (tmp_path / "experiments").exists()


def test_unreachable_tpu_address_is_a_config_error_in_seconds(tmp_path: Path) -> None:
    """TensorFlow alone waits > 12 minutes (deaf to Ctrl-C) for a TPU that is not there."""
    import time

    port = free_port()  # closed again: nothing listens there
    path = iris(tmp_path)
    start = time.monotonic()
    done = cli(["train", path, "--set", f"hardware.tpu=grpc://127.0.0.1:{port}"], timeout=180)
    assert time.monotonic() - start < 120  # TensorFlow's import is most of it
    assert_user_error(done, "hardware.tpu", f"no TPU at 'grpc://127.0.0.1:{port}'",
                      f"cannot connect to 127.0.0.1:{port} (Connection refused)")
    assert not (tmp_path / "experiments").exists()


def test_keras_20585_patch_delegates_outside_multi_worker() -> None:
    from keras.src.backend.tensorflow import trainer

    from kexp.hardware import keras_20585
    from kexp.tf import keras, tf

    assert keras_20585.needed("3.15.1") and keras_20585.needed("3.0.0")
    assert not keras_20585.needed("2.15.0")
    original = trainer.reduce_per_replica
    try:
        assert keras_20585.install()
        assert keras_20585.install()  # idempotent: one wrapper, not two
        assert trainer.reduce_per_replica.__wrapped__ is original
        assert keras_20585.installed() == ("reduce", "symbolic_build")
        strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
        with strategy.scope():  # the Keras path of a single-machine strategy still works
            model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
            model.compile("sgd", "mse")
        history = model.fit(np.ones((8, 2)), np.ones((8, 1)), batch_size=4, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
    finally:
        keras_20585.uninstall()
    assert trainer.reduce_per_replica is original and keras_20585.installed() == ()


def test_fixed_keras_version_turns_each_half_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from keras.src.backend.tensorflow import trainer

    from kexp.hardware import keras_20585
    from kexp.tf import keras

    monkeypatch.setattr(keras_20585, "FIXED_IN", {"symbolic_build": None, "reduce": (3, 16)})
    assert keras_20585.needed("3.15.1", "reduce") and not keras_20585.needed("3.16.0", "reduce")
    assert keras_20585.needed("3.16.0", "symbolic_build") and keras_20585.needed("3.16.0")
    monkeypatch.setattr(keras_20585, "FIXED_IN", {"symbolic_build": (3, 16), "reduce": (3, 16)})
    assert not keras_20585.needed("3.16.0") and keras_20585.needed("3.15.1")

    # upstream fixed one half in the installed version: only the other one is patched
    major, minor = keras_20585._version(keras.__version__)
    monkeypatch.setattr(keras_20585, "FIXED_IN", {"symbolic_build": None,
                                                  "reduce": (major, minor)})
    original = trainer.reduce_per_replica
    try:
        assert keras_20585.install()
        assert keras_20585.installed() == ("symbolic_build",)
        assert trainer.reduce_per_replica is original
    finally:
        keras_20585.uninstall()
    monkeypatch.setattr(keras_20585, "FIXED_IN", {"symbolic_build": (major, minor),
                                                  "reduce": (major, minor)})
    assert not keras_20585.install() and keras_20585.installed() == ()


def test_strategy_report_sees_the_cluster_of_tf_config() -> None:
    from kexp.hardware.report import render_hardware, strategy_report

    report = strategy_report(env={})
    names = [s["name"] for s in report["strategies"]]
    assert names == ["default", "one_device", "mirrored", "multi_worker_mirrored", "tpu"]
    assert report["auto"] == {"strategy": "default", "replicas": 1}
    assert report["xla"]["usable"] is True
    assert report["mixed_precision"]["bfloat16"]["runs"] is True
    cluster = {"cluster": {"worker": ["a:1", "b:2", "c:3"]}, "task": {"type": "worker",
                                                                    "index": 2}}
    report = strategy_report(env={"TF_CONFIG": json.dumps(cluster)})
    assert report["auto"] == {"strategy": "multi_worker_mirrored", "replicas": 3}
    assert report["tf_config"] == cluster
    text = io.StringIO()
    render_hardware(report, Console(file=text, width=120))
    assert "multi_worker_mirrored (auto)" in text.getvalue()
    assert "TF_CONFIG: 3 worker(s), this is worker 2" in text.getvalue()
    assert "XLA (jit_compile): usable" in text.getvalue()


@pytest.mark.parametrize("value, why", [
    ("not json", "the TF_CONFIG environment variable is not valid JSON"),
    (json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker",
                                                                 "index": "a"}}),
     'task.index must be an integer 0, 1, ..., not "a"'),
    (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 5}}),
     "task.index 5 is out of range for 1 worker(s)"),
    (json.dumps({"cluster": ["a:1"], "task": {"type": "worker", "index": 0}}),
     "has a malformed 'cluster'"),
    (json.dumps({"cluster": {"worker": ["a:1"]}}), "has no 'task'"),
])
def test_strategy_report_describes_a_bad_tf_config(monkeypatch: pytest.MonkeyPatch, value: str,
                                                   why: str) -> None:
    """Was: MirroredStrategy parsed TF_CONFIG itself and env-report died with a traceback."""
    from kexp.hardware.report import render_hardware, strategy_report

    monkeypatch.setenv("TF_CONFIG", value)  # TensorFlow reads os.environ, not env=
    report = strategy_report(env={"TF_CONFIG": value})
    assert why in report["tf_config"]["error"] and report["tf_config"]["value"] == value
    assert report["auto"]["strategy"] != "multi_worker_mirrored"  # the choice without it
    assert "TF_CONFIG is invalid" in report["auto"]["error"]
    assert [s["name"] for s in report["strategies"]][2:4] == ["mirrored", "multi_worker_mirrored"]
    text = io.StringIO()
    render_hardware(report, Console(file=text, width=400))
    assert "TF_CONFIG: invalid, " in text.getvalue() and why in text.getvalue()


def test_env_report_cli_with_a_bad_tf_config() -> None:
    """A report of a broken environment: everything else, and why TF_CONFIG is invalid; exit
    0, no traceback (was: JSONDecodeError from TensorFlow's TFConfigClusterResolver, exit 1)."""
    done = cli(["env-report", "--json"], env={"TF_CONFIG": "not json"})
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr, done.stderr
    record = json.loads(done.stdout)
    assert "not valid JSON" in record["hardware"]["tf_config"]["error"]
    assert record["versions"]["tensorflow"] and record["hardware"]["xla"]["usable"] is True
    done = cli(["env-report"], env={"TF_CONFIG": "not json", "COLUMNS": "400"})
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr, done.stderr
    assert "TF_CONFIG: invalid, the TF_CONFIG environment variable is not valid JSON" in done.stdout


def test_strategy_report_sees_a_slurm_job_step() -> None:
    from kexp.hardware.report import render_hardware, strategy_report

    env = {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "node[1-2]"}
    report = strategy_report(env=env)
    assert report["auto"] == {"strategy": "multi_worker_mirrored", "replicas": 2}
    assert report["slurm"] == {"tasks": 2, "task": 1, "nodes": "node[1-2]"}
    text = io.StringIO()
    render_hardware(report, Console(file=text, width=120))
    assert "multi_worker_mirrored (auto)" in text.getvalue()
    assert "Slurm job step: 2 task(s) on node[1-2], this is task 1" in text.getvalue()
    assert strategy_report(env={})["slurm"] is None


def test_env_report_cli_includes_the_strategies() -> None:
    done = cli(["env-report", "--json"])
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["hardware"]["auto"]["strategy"] == "default"
    assert {"float16", "bfloat16"} == set(record["hardware"]["mixed_precision"])
    assert record["hardware"]["tf_config"] is None


def test_validation_steps_are_kept_at_any_steps_per_execution(tmp_path: Path) -> None:
    """Was: Keras rounds validation_steps up to whole executions, so 1 validation step at 2
    per execution evaluated 2 batches: val_loss differed from the 1-per-execution run's."""
    def val_loss(folder: str, validation_steps: int | None, **hardware: Any) -> list[float]:
        (tmp_path / folder).mkdir()
        path = iris(tmp_path / folder, epochs=2, **hardware)
        config = yaml.safe_load(path.read_text())
        config["train"]["validation_steps"] = validation_steps
        config["data"]["batch_size"] = 8  # several validation batches, an even epoch
        run = train(write_config(path, config))
        assert run.model.steps_per_execution == hardware.get("steps_per_execution", 1)
        return run.history["val_loss"]

    one = val_loss("one", 1)
    assert one != pytest.approx(val_loss("all", None), rel=1e-6)  # 1 batch is not all of them
    assert val_loss("two", 1, steps_per_execution=2) == pytest.approx(one, rel=1e-5)
