"""Pick the accelerator and create the ``tf.distribute`` strategy, before any model exists.

Asking for a GPU or TPU that is not there is an error at start (exit 2, saying what
TensorFlow sees), never a silent fall back to the CPU: a researcher who asked for a GPU
should not find out a week later that the run used the CPU.

``auto`` picks ``MirroredStrategy`` for several GPUs, ``OneDeviceStrategy`` for one GPU and
the default strategy otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kexp.config.schema import HardwareSection
from kexp.errors import ConfigError
from kexp.tf import tf


@dataclass
class StrategyInfo:
    """The strategy created and what it runs on (recorded in the manifest)."""

    strategy: Any
    name: str
    replicas: int
    devices: list[str]

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "replicas": self.replicas, "devices": self.devices}


def _visible() -> dict[str, list[str]]:
    return {
        kind: [d.name for d in tf.config.list_physical_devices(kind)] for kind in ("GPU", "TPU")
    }


def make_strategy(hardware: HardwareSection) -> StrategyInfo:
    """Check the accelerator asked for, then create the strategy ``hardware`` asks for."""
    visible = _visible()
    gpus = visible["GPU"]
    seen = f"TensorFlow sees {len(gpus)} GPU(s) and {len(visible['TPU'])} TPU(s)"
    if hardware.accelerator == "gpu" and not gpus:
        raise ConfigError.single(
            ("hardware", "accelerator"),
            f"'gpu' asked for, but no GPU is visible ({seen}; CUDA build: "
            f"{tf.test.is_built_with_cuda()}). Use 'auto' or 'cpu' to train on the CPU",
        )
    if hardware.accelerator == "tpu" and not visible["TPU"]:
        raise ConfigError.single(
            ("hardware", "accelerator"), f"'tpu' asked for, but no TPU is visible ({seen})"
        )
    if hardware.accelerator == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
        gpus = []

    kind = hardware.strategy
    if kind == "auto":
        kind = "mirrored" if len(gpus) > 1 else "one_device" if gpus else "default"
    if kind == "default":
        strategy = tf.distribute.get_strategy()
    elif kind == "one_device":
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    else:  # mirrored
        strategy = tf.distribute.MirroredStrategy()
    try:
        devices = list(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy has no device list: it runs where TF places ops
        devices = [gpus[0] if gpus else "/cpu:0"]
    return StrategyInfo(strategy, kind, int(strategy.num_replicas_in_sync), devices)
