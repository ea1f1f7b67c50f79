"""Create the ``tf.distribute`` strategy a config asks for, before any model exists.

``strategy: auto`` picks, in order:

* ``tpu`` when a TPU is asked for (``accelerator: tpu`` or a ``tpu:`` address);
* ``multi_worker_mirrored`` when ``hardware.cluster.workers``, ``TF_CONFIG`` or a Slurm job
  step (``srun -n N``) describe several workers;
* ``mirrored`` over all GPUs when there are several (or over the logical CPUs when
  ``cpu_devices`` split the CPU);
* ``one_device`` on the GPU when there is one;
* the ``default`` strategy otherwise.

The choice, its replica count and devices go into the manifest (:meth:`StrategyInfo.record`).
Everything that creates variables (model, optimizer, metrics) must then be built inside
``info.strategy.scope()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from kexp.config.schema.hardware import HardwareSection
from kexp.hardware import keras_20585
from kexp.errors import ConfigError
from kexp.hardware.cluster import (
    ClusterInfo,
    bound_start,
    resolve_cluster,
    several_workers,
    tf_config_hidden,
)
from kexp.hardware.devices import Devices, configure_devices, logical_names
from kexp.tf import tf


@dataclass
class StrategyInfo:
    """The strategy created, what it runs on, and the hardware facts of the run."""

    strategy: Any
    name: str
    replicas: int
    devices: list[str]
    cluster: ClusterInfo | None = None
    connected: bool = True
    facts: dict[str, Any] = field(default_factory=dict)
    model: Any = field(default=None, repr=False)

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the run directory (see :mod:`kexp.hardware.cluster`)."""
        return self.cluster is None or self.cluster.is_chief

    def adapt_model(self, model: Any) -> Any:
        """The model to train: float32 outputs under mixed precision (call inside the scope)."""
        from kexp.hardware.precision import float32_outputs

        if self.facts.get("mixed_precision", "none") != "none":
            model = float32_outputs(model)
        self.model = model
        return model

    def summary(self) -> str:
        """One line for the console."""
        text = f"strategy: {self.name}, {self.replicas} replica(s) on {', '.join(self.devices)}"
        if self.cluster is not None:
            role = "chief" if self.cluster.is_chief else "not the chief: artifacts go to scratch"
            text += (f"; {self.cluster.task_type} {self.cluster.task_id} of "
                     f"{self.cluster.num_workers} workers ({role})")
        batch = self.facts.get("batch")
        if batch and self.replicas > 1:
            text += f"; global batch {batch['global']} = {batch['per_replica']} per replica"
        return text

    def record(self) -> dict[str, Any]:
        """What the manifest stores under ``strategy``."""
        out: dict[str, Any] = {
            "name": self.name,
            "replicas": self.replicas,
            "devices": self.devices,
            "class": type(self.strategy).__name__,
        }
        if self.cluster is not None:
            out["cluster"] = self.cluster.record()
        out.update(self.facts)
        if self.model is not None:
            from kexp.hardware.precision import describe

            out["precision"] = describe(self.model)
            out["jit_compile"] = bool(getattr(self.model, "jit_compile", False))
            out["steps_per_execution"] = int(getattr(self.model, "steps_per_execution", 1))
        patched = keras_20585.installed()
        if patched and self.name == "multi_worker_mirrored":
            out["keras_workaround"] = {"issue": "keras-team/keras#20585", "patched": list(patched)}
        return out


def choose(
    hardware: HardwareSection, devices: Devices | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """The strategy ``auto`` stands for (``devices`` known, or before configuring them)."""
    kind = hardware.strategy
    if kind != "auto":
        return kind
    if hardware.accelerator == "tpu" or hardware.tpu is not None:
        return "tpu"
    if several_workers(hardware.cluster, env):
        return "multi_worker_mirrored"
    if devices is None:
        return "auto"
    if len(devices.gpus) > 1 or (not devices.gpus and devices.cpus > 1):
        return "mirrored"
    return "one_device" if devices.gpus else "default"


def make_strategy(hardware: HardwareSection, *, connect: bool = True) -> StrategyInfo:
    """Configure the devices, then create the strategy ``hardware`` asks for.

    With ``connect=False`` (``kexp validate``) multi-worker and TPU strategies are not
    created (that would start a server or reach for the TPU); the default strategy stands
    in and the info says so.
    """
    kind = choose(hardware)
    cluster = None
    if kind == "multi_worker_mirrored" and connect:
        # before the devices: the Slurm resolver assigns GPUs through CUDA_VISIBLE_DEVICES
        cluster = resolve_cluster(hardware.cluster, hardware.accelerator)
    devices = configure_devices(hardware)
    kind = choose(hardware, devices)

    if not connect and kind in ("multi_worker_mirrored", "tpu"):
        strategy = tf.distribute.get_strategy()
        return StrategyInfo(strategy, kind, 1, ["/cpu:0"], connected=False)
    if kind == "tpu":
        from kexp.hardware.tpu import connect as connect_tpu

        strategy = connect_tpu(hardware)
    elif kind == "multi_worker_mirrored":
        keras_20585.install()
        strategy = _multi_worker(cluster, hardware.cluster.start_timeout)
    elif kind == "mirrored":
        # all visible GPUs; without GPUs, every logical CPU (one unless cpu_devices split it)
        local = None if devices.gpus else logical_names("CPU")
        with tf_config_hidden():  # TF would parse it only to ignore it (a bad one: traceback)
            strategy = tf.distribute.MirroredStrategy(devices=local)
    elif kind == "one_device":
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0" if devices.gpus else "/cpu:0")
    else:
        strategy = tf.distribute.get_strategy()
    try:
        names = [str(d) for d in strategy.extended.worker_devices]
    except (RuntimeError, AttributeError):  # the default strategy runs where TF places ops
        names = ["/gpu:0" if devices.gpus else "/cpu:0"]
    return StrategyInfo(strategy, kind, int(strategy.num_replicas_in_sync), names, cluster)


def _multi_worker(cluster: ClusterInfo | None, timeout_s: float) -> Any:
    """``MultiWorkerMirroredStrategy`` for ``cluster``, given up after ``timeout_s`` when not
    every worker starts (see :func:`~kexp.hardware.cluster.bound_start`)."""
    if cluster is None:  # strategy multi_worker_mirrored without a cluster: one worker
        return tf.distribute.MultiWorkerMirroredStrategy()
    bound_start(cluster, timeout_s)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=cluster.resolver)
    except tf.errors.DeadlineExceededError:
        where = {"workers": "hardware.cluster.workers", "tf_config": "TF_CONFIG",
                 "slurm": "the Slurm job step"}[cluster.source]
        path = ("hardware", "cluster", "workers") if cluster.source == "workers" else (
            "hardware", "cluster")
        raise ConfigError.single(
            path,
            f"not all {cluster.num_workers} workers of {where} joined within "
            f"{timeout_s:g} s (this is {cluster.task_type} {cluster.task_id}): start the same "
            "kexp train on every worker, check their addresses, or raise "
            "hardware.cluster.start_timeout",
        ) from None
