"""Devices: check the accelerator asked for and configure GPUs/CPUs before TensorFlow uses them.

Asking for a GPU that is not there is an error at start (exit 2, saying what TensorFlow
sees), never a silent fall back to the CPU: a researcher who asked for a GPU should not find
out a week later that the run used the CPU.

TensorFlow fixes its device list the first time it runs an op, after which visibility,
memory growth and logical devices can no longer change. kexp configures them before building
anything; when TensorFlow has already started (a notebook that trained before) a setting
that differs from the live one is an error that says so, one that matches is fine.

The TensorFlow config API is a parameter (``api``, default ``tf.config``) so that the GPU
logic can be tested on a machine without GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from kexp.config.schema.hardware import HardwareSection
from kexp.errors import ConfigError

_STARTED = (
    "must be set before TensorFlow starts using its devices, and this process already "
    "started them with a different setting; run kexp in a fresh process (in a notebook, "
    "restart the kernel)"
)


@dataclass
class Devices:
    """What is left visible for the strategy after configuration."""

    gpus: list[str]
    tpus: list[str]
    cpus: int


def _default_api() -> Any:
    from kexp.tf import tf

    return tf.config


def _apply(path: tuple, action: Callable[[], None], already: Callable[[], bool]) -> None:
    """Run ``action``; if TF has started, accept it only when ``already`` holds."""
    try:
        action()
    except RuntimeError:
        if not already():
            raise ConfigError.single(("hardware",) + path, _STARTED) from None


def seen(api: Any = None) -> str:
    """What TensorFlow sees, for messages: ``TensorFlow sees 0 GPU(s) and 0 TPU(s)``."""
    api = api or _default_api()
    gpus = [d.name for d in api.list_physical_devices("GPU")]
    tpus = [d.name for d in api.list_physical_devices("TPU")]
    return f"TensorFlow sees {len(gpus)} GPU(s){': ' + ', '.join(gpus) if gpus else ''} and {len(tpus)} TPU(s)"


def _select_gpus(hardware: HardwareSection, api: Any) -> list[Any]:
    physical = list(api.list_physical_devices("GPU"))
    if hardware.accelerator == "gpu" and not physical:
        from kexp.tf import tf

        raise ConfigError.single(
            ("hardware", "accelerator"),
            f"'gpu' asked for, but no GPU is visible ({seen(api)}; TensorFlow built with "
            f"CUDA: {tf.test.is_built_with_cuda()}). Use 'auto' or 'cpu' to train on the CPU",
        )
    if hardware.accelerator == "cpu":
        selected: list[Any] = []
    elif hardware.gpus is not None:
        if not physical:
            raise ConfigError.single(
                ("hardware", "gpus"),
                f"GPUs {hardware.gpus} asked for, but no GPU is visible ({seen(api)})",
            )
        issues = [i for i in hardware.gpus if i >= len(physical)]
        if issues:
            raise ConfigError.single(
                ("hardware", "gpus", hardware.gpus.index(issues[0])),
                f"there is no GPU {issues[0]}: {seen(api)} (indices 0..{len(physical) - 1})",
            )
        selected = [physical[i] for i in dict.fromkeys(hardware.gpus)]
    else:
        selected = physical
    if physical:
        _apply(
            ("gpus",) if hardware.gpus is not None else ("accelerator",),
            lambda: api.set_visible_devices(selected, "GPU"),
            lambda: list(api.get_visible_devices("GPU")) == selected,
        )
    return selected


def configure_devices(hardware: HardwareSection, api: Any = None) -> Devices:
    """Apply the ``hardware`` device settings; raise ConfigError for what is not there."""
    api = api or _default_api()
    gpus = _select_gpus(hardware, api)
    for gpu in gpus:
        if hardware.memory_growth:
            _apply(
                ("memory_growth",),
                lambda gpu=gpu: api.experimental.set_memory_growth(gpu, True),
                lambda gpu=gpu: bool(api.experimental.get_memory_growth(gpu)),
            )
        if hardware.memory_limit_mb is not None:
            config = [api.LogicalDeviceConfiguration(memory_limit=hardware.memory_limit_mb)]
            _apply(
                ("memory_limit_mb",),
                lambda gpu=gpu, config=config: api.set_logical_device_configuration(gpu, config),
                lambda gpu=gpu, config=config: api.get_logical_device_configuration(gpu) == config,
            )
    cpus = 1
    if hardware.cpu_devices is not None:
        cpu = api.list_physical_devices("CPU")[0]
        config = [api.LogicalDeviceConfiguration() for _ in range(hardware.cpu_devices)]
        _apply(
            ("cpu_devices",),
            lambda: api.set_logical_device_configuration(cpu, config),
            lambda: len(api.list_logical_devices("CPU")) == hardware.cpu_devices,
        )
        cpus = hardware.cpu_devices
    tpus = [d.name for d in api.list_physical_devices("TPU")]
    return Devices([g.name for g in gpus], tpus, cpus)


def logical_names(kind: str) -> list[str]:
    """Names of the logical devices of ``kind`` (this starts TensorFlow's devices)."""
    from kexp.tf import tf

    return [d.name for d in tf.config.list_logical_devices(kind)]
