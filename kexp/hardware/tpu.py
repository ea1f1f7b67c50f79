"""TPUs: connect through a ``TPUClusterResolver`` and apply the rules TPUs need.

    hardware: {strategy: tpu, tpu: local}     # a TPU VM; or a TPU name, or grpc://host:port

The rules (:func:`tpu_rules`), applied to the config before the model is built:

* XLA needs static shapes, so the last partial training batch is dropped
  (``data.drop_remainder: true``);
* a TPU step is short and the host round trip is not, so ``hardware.steps_per_execution``
  defaults to :data:`TPU_STEPS_PER_EXECUTION` unless the config sets it;
* float16 is refused by the schema: TPUs compute in bfloat16.

No TPU was available while writing this: connection errors are tested, training is not.
"""

from __future__ import annotations

from typing import Any

from kexp.config.schema import ExperimentConfig
from kexp.config.schema.hardware import HardwareSection
from kexp.errors import ConfigError

TPU_STEPS_PER_EXECUTION = 32


def connect(hardware: HardwareSection) -> Any:
    """Resolve, connect to and initialise the TPU; return a ``TPUStrategy``.

    Every failure (unknown name, no TPU on this VM, unreachable address) is a config error on
    ``hardware.tpu`` with TensorFlow's reason.
    """
    from kexp.tf import tf

    address = hardware.tpu
    path = ("hardware", "tpu") if address is not None else ("hardware", "strategy")
    shown = repr(address) if address is not None else "(TPU_NAME or the local TPU)"
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
    except Exception as exc:  # ValueError, URLError from the GCE metadata lookup, ...
        raise ConfigError.single(path, f"cannot resolve the TPU {shown}: {_reason(exc)}") from None
    try:
        if address != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as exc:  # NotFoundError, UnavailableError, UnimplementedError, ...
        raise ConfigError.single(
            path, f"cannot initialise the TPU {shown}: {_reason(exc)}"
        ) from None
    return tf.distribute.TPUStrategy(resolver)


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
