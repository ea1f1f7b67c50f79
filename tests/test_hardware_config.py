"""Unit tests of the hardware rules: schema, cluster sources, batch semantics, TPU rules,
GPU configuration (against a recording stand-in for ``tf.config``: there is no GPU here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest

from conftest import CONFIGS, assert_user_error, cli
from kexp.config.loader import load_config_text
from kexp.config.schema import ExperimentConfig
from kexp.config.schema.hardware import ClusterSection, HardwareSection
from kexp.errors import ConfigError

BASE = """
name: hw
data:
  train: {source: npz, path: train.npz}
  batch_size: 32
model:
  sequential:
    input: {shape: [4]}
    layers: [{Dense: {units: 3}}]
compile: {optimizer: adam, loss: mse}
"""


def load(hardware: str) -> ExperimentConfig:
    return load_config_text(BASE + "hardware:\n" + hardware).config


def problems(hardware: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(hardware)
    return str(info.value)


# --------------------------------------------------------------------------- schema
def test_defaults_and_every_strategy_name() -> None:
    hw = HardwareSection()
    assert (hw.accelerator, hw.strategy, hw.mixed_precision) == ("auto", "auto", "none")
    assert hw.jit_compile is False and hw.steps_per_execution == 1
    for name in ("default", "one_device", "mirrored", "multi_worker_mirrored"):
        assert load(f"  strategy: {name}").hardware.strategy == name


def test_unknown_strategy_suggests_the_nearest_and_gives_the_line() -> None:
    text = problems("  strategy: mirored")
    assert "hardware.strategy" in text and "did you mean 'mirrored'" in text
    assert "<string>:12:" in text  # the line of `strategy:` in BASE + hardware


@pytest.mark.parametrize("hardware, fragment", [
    ("  accelerator: gpu\n  strategy: tpu", "cannot run on accelerator 'gpu'"),
    ("  tpu: local\n  strategy: mirrored", "strategy 'mirrored' cannot run on a TPU"),
    ("  tpu: local\n  mixed_precision: float16", "use mixed_precision bfloat16"),
    ("  accelerator: cpu\n  gpus: [0]", "gpus configure GPUs, but accelerator is 'cpu'"),
    ("  accelerator: cpu\n  memory_growth: true", "memory_growth configure GPUs"),
    ("  accelerator: gpu\n  cpu_devices: 2", "cpu_devices splits the CPU"),
    ("  strategy: mirrored\n  cluster: {workers: ['a:1', 'b:2']}",
     "'cluster' only applies to strategy multi_worker_mirrored"),
])
def test_contradicting_keys_are_reported(hardware: str, fragment: str) -> None:
    assert fragment in problems(hardware)


@pytest.mark.parametrize("cluster, fragment", [
    ("{workers: ['node1:12345', 'node2']}", "hardware.cluster.workers[1]: expected host:port"),
    ("{workers: ['node1:99999']}", "a port from 1 to 65535"),
    ("{workers: ['a:1', 'b:2'], task_index: 2}", "task_index 2 is out of range for 2 worker(s)"),
    ("{task_index: 0}", "'task_index' only applies to a 'workers' list"),
    ("{resolver: slurm, workers: ['a:1']}", "'workers' is given but resolver is 'slurm'"),
    ("{resolver: workers}", "resolver 'workers' needs the list"),
    ("{workers: ['a:1', 'a:1']}", "the same host:port twice"),
    ("{resolver: kubernetes}", "must be one of auto, tf_config, workers, slurm"),
])
def test_cluster_mistakes(cluster: str, fragment: str) -> None:
    assert fragment in problems(f"  strategy: multi_worker_mirrored\n  cluster: {cluster}")


def test_ipv6_and_hostnames_are_accepted() -> None:
    section = ClusterSection(workers=["[::1]:2222", "10.0.0.2:2222", "node-3.cluster:2222"])
    assert len(section.workers or []) == 3


def test_schema_does_not_import_tensorflow() -> None:
    code = ("import sys; import kexp.config.schema.hardware, kexp.config.loader; "
            "print('tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


# --------------------------------------------------------------------------- cluster
def test_workers_from_yaml_with_task_index_from_the_environment() -> None:
    from kexp.hardware.cluster import resolve_cluster

    section = ClusterSection(workers=["h0:1000", "h1:1001"], task_index=0)
    chief = resolve_cluster(section, env={})
    other = resolve_cluster(section, env={"KEXP_TASK_INDEX": "1"})  # the env var wins
    assert chief is not None and other is not None
    assert (chief.task_id, chief.is_chief, other.task_id, other.is_chief) == (0, True, 1, False)
    assert other.resolver.cluster_spec().as_dict() == {"worker": ["h0:1000", "h1:1001"]}
    assert other.resolver.task_id == 1 and other.num_workers == 2
    assert other.record()["task"] == {"type": "worker", "index": 1}


@pytest.mark.parametrize("env, fragment", [
    ({}, "which of the 2 workers is this process? Set hardware.cluster.task_index, or "
         "KEXP_TASK_INDEX=0..1"),
    ({"KEXP_TASK_INDEX": "x"}, "KEXP_TASK_INDEX='x' is not an integer"),
    ({"KEXP_TASK_INDEX": "5"}, "task index 5 is out of range for 2 worker(s)"),
])
def test_task_index_mistakes(env: dict, fragment: str) -> None:
    from kexp.hardware.cluster import resolve_cluster

    with pytest.raises(ConfigError) as info:
        resolve_cluster(ClusterSection(workers=["h0:1", "h1:2"]), env=env)
    assert fragment in str(info.value)
    assert info.value.issues[0].path == ("hardware", "cluster", "task_index")


def tf_config(cluster: dict, task_type: str, index: int) -> dict[str, str]:
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type,
                                                                  "index": index}})}


def test_tf_config_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    from kexp.hardware.cluster import is_chief, resolve_cluster, several_workers

    cluster = {"chief": ["c:1"], "worker": ["w:1", "w:2"]}
    for task_type, index, chief in (("chief", 0, True), ("worker", 0, False), ("worker", 1, False)):
        env = tf_config(cluster, task_type, index)
        monkeypatch.setenv("TF_CONFIG", env["TF_CONFIG"])
        info = resolve_cluster(ClusterSection(), env=env)
        assert info is not None and info.source == "tf_config"
        assert (info.task_type, info.task_id, info.is_chief, is_chief(info)) == (
            task_type, index, chief, chief)
        assert info.num_workers == 3
        assert several_workers(ClusterSection(), env=env)
    assert is_chief(None)  # no cluster: this process writes the artifacts
    assert resolve_cluster(ClusterSection(), env={}) is None
    assert not several_workers(ClusterSection(), env=tf_config({"worker": ["w:1"]}, "worker", 0))


TWO = {"worker": ["w:1", "w:2"]}


@pytest.mark.parametrize("env, fragment", [
    ({"TF_CONFIG": "{not json"}, "TF_CONFIG environment variable is not valid JSON"),
    ({"TF_CONFIG": '{"cluster": []}'}, "TF_CONFIG has a malformed 'cluster' (it must be {"),
    ({"TF_CONFIG": "[1, 2]"}, 'TF_CONFIG must be a JSON object {"cluster"'),
    ({"TF_CONFIG": json.dumps({"cluster": TWO})}, "TF_CONFIG has no 'task'"),
    ({"TF_CONFIG": json.dumps({"task": {"type": "worker", "index": 0}})},
     "TF_CONFIG has no 'cluster'"),
    ({"TF_CONFIG": json.dumps({"cluster": TWO, "task": "worker"})},
     "TF_CONFIG has a malformed 'task'"),
    ({"TF_CONFIG": json.dumps({"cluster": TWO, "task": {"type": "worker"}})},
     "TF_CONFIG has no task.index"),
    ({"TF_CONFIG": json.dumps({"cluster": TWO, "task": {"index": 0}})},
     "TF_CONFIG has no task.type"),
    (tf_config({}, "worker", 0), "TF_CONFIG has an empty cluster"),
    # was: ValueError: invalid literal for int() with base 10: 'a' (exit 1, a traceback)
    (tf_config(TWO, "worker", "a"), 'TF_CONFIG task.index must be an integer 0, 1, ..., not "a"'),
    (tf_config(TWO, "worker", 1.5), "TF_CONFIG task.index must be an integer 0, 1, ..., not 1.5"),
    (tf_config(TWO, "worker", 1.0), "TF_CONFIG task.index must be an integer 0, 1, ..., not 1.0"),
    (tf_config(TWO, "worker", True), "TF_CONFIG task.index must be an integer 0, 1, ..., not true"),
    (tf_config(TWO, "worker", None), "TF_CONFIG task.index must be an integer 0, 1, ..., not null"),
    (tf_config(TWO, "worker", -1), "TF_CONFIG task.index must be 0 or more, not -1"),
    # str.isdigit takes '²', which int() refuses (was: a ValueError traceback; breaker 4)
    (tf_config(TWO, "worker", "\u00b2"), "TF_CONFIG task.index must be an integer 0, 1,"),
    (tf_config({"worker": ["local host:1"]}, "worker", 0), "cluster.worker must be a list of"),
    (tf_config({"worker": ["w:\u00b2"]}, "worker", 0), "cluster.worker must be a list of"),
    (tf_config(TWO, 3, 0), "TF_CONFIG task.type must be 'chief' or 'worker', not 3"),
    (tf_config({"worker": "w:1"}, "worker", 0),
     'TF_CONFIG cluster.worker must be a list of "host:port" strings, not "w:1"'),
    (tf_config({"worker": ["w:1", "w2"]}, "worker", 0), "cluster.worker must be a list of"),
    (tf_config({"worker": ["w:1", 7]}, "worker", 0), "cluster.worker must be a list of"),
    (tf_config({"worker": ["w:99999"]}, "worker", 0), "cluster.worker must be a list of"),
    (tf_config({"worker": {"0": "w:1"}}, "worker", 0), "cluster.worker must be a list of"),
    (tf_config({"chief": ["c:1", "c:2"], "worker": ["w:1"]}, "worker", 0), "2 chiefs"),
    (tf_config({"worker": ["w:1"]}, "worker", 3), "task 'worker' #3 is not in its cluster"),
    (tf_config(TWO, "worker", 2), "task.index 2 is out of range for 2 worker(s) (0..1)"),
    (tf_config({"chief": ["c:1"], "worker": ["w:1"]}, "chief", 1),
     "task.index 1 is out of range for 1 chief(s) (0..0)"),
    (tf_config(TWO, "ps", 0), "TF_CONFIG task 'ps' #0 is not in its cluster ['worker']"),
    (tf_config({"worker": ["w:1"], "ps": ["p:1"]}, "worker", 0), "parameter servers are not"),
])
def test_tf_config_mistakes(env: dict, fragment: str) -> None:
    """Every malformed TF_CONFIG is a config error at hardware.cluster, for every reader."""
    from kexp.hardware.cluster import resolve_cluster, several_workers

    with pytest.raises(ConfigError) as info:
        resolve_cluster(ClusterSection(), env=env)
    assert fragment in str(info.value)
    assert info.value.issues[0].path == ("hardware", "cluster")
    # strategy auto reads it the same way (was: a one-worker cluster was never checked, so
    # task index 5 of 1 worker trained as a single worker)
    with pytest.raises(ConfigError) as info:
        several_workers(ClusterSection(), env=env)
    assert fragment in str(info.value)


def test_tf_config_index_as_a_string_is_taken_like_tensorflow_takes_it() -> None:
    from kexp.hardware.cluster import resolve_cluster

    info = resolve_cluster(ClusterSection(), env=tf_config(TWO, "worker", "1"))
    assert info is not None and (info.task_type, info.task_id) == ("worker", 1)


@pytest.mark.parametrize("tf_config_value, fragments", [
    (tf_config(TWO, "worker", "a")["TF_CONFIG"], ['task.index must be an integer', '"a"']),
    (tf_config({"worker": ["localhost:1"]}, "worker", 5)["TF_CONFIG"],
     ["task 'worker' #5", "out of range for 1 worker(s)"]),
    (tf_config({"worker": ["localhost:1"]}, "ps", 0)["TF_CONFIG"],
     ["task 'ps' #0 is not in its cluster"]),
])
def test_train_refuses_a_bad_tf_config_before_training(tmp_path: Path, tf_config_value: str,
                                                        fragments: list) -> None:
    """Was: index 'a' exited 1 with a ValueError traceback; index 5 (or a ps task) of a
    one-worker cluster trained as a single worker, exit 0."""
    done = cli(["train", CONFIGS / "iris_mlp.yaml", "--output-root", tmp_path / "runs"],
               env={"TF_CONFIG": tf_config_value})
    assert_user_error(done, "hardware.cluster: TF_CONFIG", *fragments)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_mirrored_strategy_does_not_read_a_bad_tf_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: TensorFlow's MirroredStrategy parsed TF_CONFIG (only to ignore it) and a malformed
    one gave a JSONDecodeError traceback; kexp creates it without TF_CONFIG, and restores it."""
    from kexp.hardware.strategy import make_strategy

    monkeypatch.setenv("TF_CONFIG", "not json")
    info = make_strategy(HardwareSection(strategy="mirrored"))
    assert info.name == "mirrored" and info.replicas >= 1
    assert os.environ["TF_CONFIG"] == "not json"


def test_explicit_resolvers_need_their_environment() -> None:
    from kexp.hardware.cluster import resolve_cluster

    with pytest.raises(ConfigError, match="TF_CONFIG environment variable is not set"):
        resolve_cluster(ClusterSection(resolver="tf_config"), env={})
    with pytest.raises(ConfigError, match="not a Slurm task .* start it with srun"):
        resolve_cluster(ClusterSection(resolver="slurm"), env={})


def test_slurm_job_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from kexp.hardware.cluster import resolve_cluster

    slurm = {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2",
             "SLURM_STEP_NODELIST": "node[07-08]", "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    info = resolve_cluster(ClusterSection(port=7000), accelerator="cpu", env=slurm)  # auto
    assert info is not None and info.source == "slurm"
    assert info.spec == {"worker": ["node07:7000", "node08:7000"]}
    assert (info.task_type, info.task_id, info.is_chief) == ("worker", 1, False)


SLURM_STEP = {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "2",
              "SLURM_STEP_NODELIST": "node[07-08]", "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}


@pytest.mark.parametrize("env, expected", [
    (SLURM_STEP, "multi_worker_mirrored"),  # srun -n 2 kexp train
    ({**SLURM_STEP, "SLURM_STEP_NUM_TASKS": "1"}, "auto"),  # srun -n 1: one worker
    # a batch script itself (sbatch -n 2, no srun): one process, no job step
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_NODELIST": "node07"}, "auto"),
    # TF_CONFIG comes first, as in resolve_cluster
    ({**SLURM_STEP, "TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"]},
                                             "task": {"type": "worker", "index": 0}})}, "auto"),
])
def test_auto_strategy_sees_a_slurm_job_step(monkeypatch: pytest.MonkeyPatch, env: dict,
                                            expected: str) -> None:
    import os

    from kexp.hardware.cluster import resolve_cluster
    from kexp.hardware.strategy import choose

    for key in [k for k in os.environ if k.startswith("SLURM_") or k == "TF_CONFIG"]:
        monkeypatch.delenv(key)
    for key, value in env.items():  # TensorFlow's Slurm resolver reads os.environ
        monkeypatch.setenv(key, value)
    assert choose(HardwareSection(), env=env) == expected
    resolved = resolve_cluster(ClusterSection(), accelerator="cpu", env=env)
    if expected == "multi_worker_mirrored":  # and the cluster it joins is the job step's
        assert resolved is not None and resolved.source == "slurm"
    else:
        assert resolved is None or resolved.num_workers == 1


def test_scratch_directories_are_private_and_removed() -> None:
    from kexp.hardware.cluster import ClusterInfo, release, scratch_root

    info = ClusterInfo("workers", {"worker": ["a:1", "b:2"]}, "worker", 1)
    scratch = scratch_root(info)
    (scratch / "run" / "model.keras").parent.mkdir(parents=True)
    (scratch / "run" / "model.keras").write_text("x")
    assert scratch.name.startswith("kexp-worker1-")
    release(scratch)
    assert not scratch.exists()
    keep = Path(scratch.parent / "not-kexp")  # release never removes anything else
    release(keep)
    release(None)


# --------------------------------------------------------------------------- batch size
def test_global_batch_is_split_over_replicas() -> None:
    from kexp.hardware.batch import global_batch

    config, record = global_batch(load("  strategy: mirrored"), 4, "mirrored")
    assert config.data.batch_size == 32
    assert record == {"global": 32, "per_replica": 8, "replicas": 4, "given_as": "global"}


def test_per_replica_batch_becomes_the_global_batch() -> None:
    from kexp.hardware.batch import global_batch

    config, record = global_batch(load("  batch_per_replica: true"), 3, "mirrored")
    assert config.data.batch_size == 96 and config.hardware.batch_per_replica is False
    assert record == {"global": 96, "per_replica": 32, "replicas": 3, "given_as": "per_replica"}


def test_indivisible_global_batch_is_an_error_with_the_numbers() -> None:
    from kexp.hardware.batch import global_batch

    with pytest.raises(ConfigError) as info:
        global_batch(load("  strategy: mirrored"), 3, "mirrored")
    issue = info.value.issues[0]
    assert issue.path == ("data", "batch_size")
    assert "global batch size 32 does not split over the 3 replicas of the mirrored strategy" \
        in issue.message
    assert "30 or 33" in issue.message and "batch_per_replica" in issue.message


# --------------------------------------------------------------------------- TPU rules
def test_tpu_rules_drop_remainder_and_steps_per_execution() -> None:
    from kexp.hardware.tpu import TPU_STEPS_PER_EXECUTION, tpu_rules

    config, notes = tpu_rules(load("  tpu: local"))
    assert config.data.drop_remainder is True
    assert config.hardware.steps_per_execution == TPU_STEPS_PER_EXECUTION
    assert len(notes) == 2
    config, notes = tpu_rules(load("  tpu: local\n  steps_per_execution: 5"))
    assert config.hardware.steps_per_execution == 5  # the user's choice is kept
    assert [n for n in notes if "steps_per_execution" in n] == []


def test_tpu_that_cannot_be_resolved_is_a_config_error() -> None:
    from kexp.hardware.tpu import connect

    with pytest.raises(ConfigError) as info:
        connect(HardwareSection(tpu="no-such-tpu-name"))
    assert info.value.issues[0].path == ("hardware", "tpu")
    assert "cannot resolve the TPU 'no-such-tpu-name'" in str(info.value)


_TPU_VARIABLES = ("KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_NAME", "TPU_CONFIG")


@pytest.mark.parametrize("hardware, path", [
    ({"accelerator": "tpu"}, ("hardware", "accelerator")),
    ({"strategy": "tpu"}, ("hardware", "strategy")),
])
def test_tpu_asked_for_with_none_visible_or_named(monkeypatch: pytest.MonkeyPatch,
                                                  hardware: dict, path: tuple) -> None:
    from kexp.hardware.tpu import connect

    for name in _TPU_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError) as info:
        connect(HardwareSection(**hardware))
    issue = info.value.issues[0]
    assert issue.path == path  # the key the user set, not one they did not
    assert "asked for, but no TPU is visible (TensorFlow sees 0 GPU(s) and 0 TPU(s))" \
        in issue.message
    assert "hardware.tpu is not set, nor TPU_NAME" in issue.message
    assert "Please provide a TPU Name" not in issue.message


def _never(why: str) -> Any:
    def called(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"must not be reached: {why}")
    return called


def test_tpu_named_by_the_environment_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from kexp.hardware.tpu import connect
    from kexp.tf import tf

    for name in _TPU_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TPU_NAME", "grpc://127.0.0.1:1")  # nothing listens on port 1
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster",
                        _never("TensorFlow waits for it without a deadline"))
    with pytest.raises(ConfigError) as info:
        connect(HardwareSection(accelerator="tpu"))
    assert info.value.issues[0].path == ("hardware", "accelerator")
    assert "no TPU at TPU_NAME='grpc://127.0.0.1:1': cannot connect to 127.0.0.1:1" \
        in str(info.value)


def test_tpu_address_must_answer_as_a_grpc_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked before TensorFlow connects: TF would wait for it without a deadline."""
    import socket
    import time

    from kexp.hardware import tpu
    from kexp.tf import tf

    monkeypatch.setattr(tpu, "REACH_TIMEOUT_S", 1.0)
    with socket.socket() as listener:  # accepts TCP connections, never speaks HTTP/2
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        task = f"127.0.0.1:{listener.getsockname()[1]}"
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec({"worker": [task]}), task_type="worker", task_id=0)
        start = time.monotonic()
        with pytest.raises(ConfigError) as info:
            tpu._check_reachable(resolver, ("hardware", "tpu"), f"'grpc://{task}'")
        assert time.monotonic() - start < 10
    assert f"{task} accepts connections but does not answer as a gRPC server within 1 s" \
        in str(info.value)
    server = tf.distribute.Server.create_local_server()  # a real gRPC server answers
    task = server.target.removeprefix("grpc://")
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({"worker": [task]}), task_type="worker", task_id=0)
    tpu._check_reachable(resolver, ("hardware", "tpu"), task)


# --------------------------------------------------------------------------- GPUs
Device = namedtuple("Device", "name device_type")
Logical = namedtuple("Logical", "memory_limit", defaults=(None,))


class FakeConfig:
    """Records what kexp asks of ``tf.config``; ``started`` makes setters fail like TF's."""

    LogicalDeviceConfiguration = Logical

    def __init__(self, gpus: int, started: bool = False):
        self.physical = {"GPU": [Device(f"/physical_device:GPU:{i}", "GPU") for i in range(gpus)],
                         "CPU": [Device("/physical_device:CPU:0", "CPU")], "TPU": []}
        self.visible = list(self.physical["GPU"])
        self.growth: dict[str, bool] = {}
        self.logical: dict[str, list] = {}
        self.started = started
        self.experimental = self

    def _check(self) -> None:
        if self.started:
            raise RuntimeError("cannot be modified after being initialized")

    def list_physical_devices(self, kind: str) -> list[Device]:
        return self.physical[kind]

    def set_visible_devices(self, devices: list, kind: str) -> None:
        self._check()
        self.visible = list(devices)

    def get_visible_devices(self, kind: str) -> list:
        return self.visible

    def set_memory_growth(self, device: Any, value: bool) -> None:
        self._check()
        self.growth[device.name] = value

    def get_memory_growth(self, device: Any) -> bool:
        return self.growth.get(device.name, False)

    def set_logical_device_configuration(self, device: Any, config: list) -> None:
        self._check()
        self.logical[device.name] = config

    def get_logical_device_configuration(self, device: Any) -> list | None:
        return self.logical.get(device.name)


def test_gpu_selection_memory_growth_and_limit() -> None:
    from kexp.hardware.devices import configure_devices

    api = FakeConfig(gpus=4)
    devices = configure_devices(
        HardwareSection(gpus=[2, 0], memory_growth=True, memory_limit_mb=2048), api)
    assert devices.gpus == ["/physical_device:GPU:2", "/physical_device:GPU:0"]
    assert [d.name for d in api.visible] == devices.gpus
    assert api.growth == {"/physical_device:GPU:2": True, "/physical_device:GPU:0": True}
    assert api.logical["/physical_device:GPU:0"] == [Logical(memory_limit=2048)]
    assert "/physical_device:GPU:1" not in api.growth


def test_auto_uses_every_gpu_and_cpu_hides_them() -> None:
    from kexp.hardware.devices import configure_devices
    from kexp.hardware.strategy import choose

    api = FakeConfig(gpus=2)
    devices = configure_devices(HardwareSection(), api)
    assert len(devices.gpus) == 2 and choose(HardwareSection(), devices) == "mirrored"
    assert choose(HardwareSection(), configure_devices(HardwareSection(), FakeConfig(1))) \
        == "one_device"
    api = FakeConfig(gpus=2)
    devices = configure_devices(HardwareSection(accelerator="cpu"), api)
    assert devices.gpus == [] and api.visible == []
    assert choose(HardwareSection(accelerator="cpu"), devices) == "default"


def test_gpu_index_that_does_not_exist() -> None:
    from kexp.hardware.devices import configure_devices

    with pytest.raises(ConfigError) as info:
        configure_devices(HardwareSection(gpus=[0, 3]), FakeConfig(gpus=2))
    assert info.value.issues[0].path == ("hardware", "gpus", 1)
    assert "there is no GPU 3: TensorFlow sees 2 GPU(s)" in str(info.value)
    with pytest.raises(ConfigError, match=r"GPUs \[0\] asked for, but no GPU is visible"):
        configure_devices(HardwareSection(gpus=[0]), FakeConfig(gpus=0))


def test_settings_after_tensorflow_started() -> None:
    from kexp.hardware.devices import configure_devices

    api = FakeConfig(gpus=2, started=True)
    configure_devices(HardwareSection(), api)  # nothing changes: fine
    with pytest.raises(ConfigError) as info:
        configure_devices(HardwareSection(gpus=[1]), api)
    assert info.value.issues[0].path == ("hardware", "gpus")
    assert "run kexp in a fresh process" in str(info.value)
    with pytest.raises(ConfigError, match="must be set before TensorFlow starts"):
        configure_devices(HardwareSection(memory_growth=True), api)


def test_missing_gpu_is_an_error_saying_what_tensorflow_sees() -> None:
    from kexp.hardware.devices import configure_devices

    with pytest.raises(ConfigError) as info:
        configure_devices(HardwareSection(accelerator="gpu"))  # the real tf.config: no GPU
    assert info.value.issues[0].path == ("hardware", "accelerator")
    assert "'gpu' asked for, but no GPU is visible (TensorFlow sees 0 GPU(s)" in str(info.value)
