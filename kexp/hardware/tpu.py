"""TPUs: connect through a ``TPUClusterResolver`` and apply the rules TPUs need.

    hardware: {strategy: tpu, tpu: local}     # a TPU VM; or a TPU name, or grpc://host:port

The rules (:func:`tpu_rules`), applied to the config before the model is built:

* XLA needs static shapes, so the last partial training batch is dropped
  (``data.drop_remainder: true``);
* a TPU step is short and the host round trip is not, so ``hardware.steps_per_execution``
  defaults to :data:`TPU_STEPS_PER_EXECUTION` unless the config sets it;
* float16 is refused by the schema: TPUs compute in bfloat16.

Connecting must never hang. TensorFlow waits without a deadline for a TPU worker that does
not answer (``experimental_connect_to_cluster`` blocks in its C++ context set-up, deaf to
Ctrl-C), so before it is called every worker address of the resolved TPU must accept a TCP
connection and complete a gRPC (HTTP/2) handshake within :data:`REACH_TIMEOUT_S`; otherwise
the address is a config error on ``hardware.tpu``. ``accelerator: tpu`` without an address
uses a TPU TensorFlow sees on this machine (``local``), then one the environment names
(``TPU_NAME``), and otherwise stops at ``hardware.accelerator`` saying what TensorFlow sees.

No TPU was available while writing this: connection errors are tested, training is not.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from kexp.config.schema import ExperimentConfig
from kexp.config.schema.hardware import HardwareSection
from kexp.errors import ConfigError, KeyPath

TPU_STEPS_PER_EXECUTION = 32

#: Seconds a TPU worker address gets to accept a connection and answer as a gRPC server.
#: A TPU answers in milliseconds from its own zone; this only bounds a wrong address.
REACH_TIMEOUT_S = 10.0

#: Where ``TPUClusterResolver()`` looks for a TPU when given no address (TF 2.21's client).
_TPU_VARIABLES = ("KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_NAME", "TPU_CONFIG")


def connect(hardware: HardwareSection) -> Any:
    """Resolve, connect to and initialise the TPU; return a ``TPUStrategy``.

    Every failure (unknown name, no TPU on this VM, unreachable address) is a config error on
    ``hardware.tpu`` with TensorFlow's reason; no address and no TPU in sight is one on the
    key that asked for a TPU (``hardware.accelerator`` or ``hardware.strategy``).
    """
    from kexp.tf import tf

    address = hardware.tpu
    if address is not None:
        path: KeyPath = ("hardware", "tpu")
    else:
        path = ("hardware", "accelerator" if hardware.accelerator == "tpu" else "strategy")
        if tf.config.list_physical_devices("TPU"):
            address = "local"  # a TPU VM: its TPUs are this machine's devices
        elif not _named_by_environment():
            raise ConfigError.single(path, _nothing_named(hardware))
    shown = repr(address) if address is not None else _named_by_environment()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
    except Exception as exc:  # ValueError, URLError from the GCE metadata lookup, ...
        raise ConfigError.single(path, f"cannot resolve the TPU {shown}: {_reason(exc)}") from None
    if address != "local":
        _check_reachable(resolver, path, shown)
    try:
        if address != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as exc:  # NotFoundError, UnavailableError, UnimplementedError, ...
        raise ConfigError.single(
            path, f"cannot initialise the TPU {shown}: {_reason(exc)}"
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def _named_by_environment() -> str:
    """The variables through which TensorFlow's resolver finds a TPU without an address."""
    return ", ".join(f"{k}={os.environ[k]!r}" for k in _TPU_VARIABLES if os.environ.get(k))


def _nothing_named(hardware: HardwareSection) -> str:
    """No address in the config or environment, and no TPU on this machine."""
    from kexp.hardware.devices import seen

    asked = "accelerator 'tpu'" if hardware.accelerator == "tpu" else "strategy 'tpu'"
    return (
        f"{asked} asked for, but no TPU is visible ({seen()}) and none is named "
        "(hardware.tpu is not set, nor TPU_NAME). Set hardware.tpu to a TPU name or "
        "grpc://host:port, or use accelerator auto or cpu to train without a TPU"
    )


def _check_reachable(resolver: Any, path: KeyPath, shown: str) -> None:
    """Every TPU worker must answer within :data:`REACH_TIMEOUT_S` (see the module doc)."""
    try:
        tasks = list(resolver.cluster_spec().job_tasks(resolver.task_type))
    except Exception as exc:  # a TPU name looked up through the Cloud TPU API
        raise ConfigError.single(path, f"cannot resolve the TPU {shown}: {_reason(exc)}") from None
    for task in tasks:
        host, _, port = task.rpartition(":")
        host = host.strip("[]")  # [IPv6]:port
        try:
            socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S).close()
        except (OSError, ValueError) as exc:
            why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise ConfigError.single(
                path, f"no TPU at {shown}: cannot connect to {task} ({why}); check the "
                "address and that the TPU is running (a TPU worker listens on port 8470)",
            ) from None
        if not _answers_grpc(task):
            raise ConfigError.single(
                path, f"no TPU at {shown}: {task} accepts connections but does not answer "
                f"as a gRPC server within {REACH_TIMEOUT_S:g} s (a TPU worker listens on "
                "port 8470)",
            )


def _answers_grpc(task: str) -> bool:
    """Whether ``host:port`` completes a gRPC handshake (grpcio comes with TensorFlow)."""
    import grpc

    channel = grpc.insecure_channel(task)
    try:
        grpc.channel_ready_future(channel).result(timeout=REACH_TIMEOUT_S)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


def _reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def tpu_rules(config: ExperimentConfig) -> tuple[ExperimentConfig, list[str]]:
    """``config`` adjusted for a TPU, and a note for each change made."""
    notes: list[str] = []
    data, hardware = config.data, config.hardware
    if not data.drop_remainder:
        data = data.model_copy(update={"drop_remainder": True})
        notes.append("data.drop_remainder set to true (TPUs need static batch shapes)")
    if "steps_per_execution" not in hardware.model_fields_set:
        hardware = hardware.model_copy(update={"steps_per_execution": TPU_STEPS_PER_EXECUTION})
        notes.append(f"hardware.steps_per_execution set to {TPU_STEPS_PER_EXECUTION}")
    return config.model_copy(update={"data": data, "hardware": hardware}), notes
