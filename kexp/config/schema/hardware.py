"""The ``hardware`` section: which devices train the model, under which ``tf.distribute``
strategy, at which precision.

    hardware:
      accelerator: auto       # auto | cpu | gpu | tpu   (gpu/tpu are errors when absent)
      strategy: auto          # auto | default | one_device | mirrored | multi_worker_mirrored | tpu
      gpus: [0, 1]            # which GPUs (default: all visible)
      memory_growth: true     # allocate GPU memory as needed
      mixed_precision: none   # none | float16 | bfloat16
      jit_compile: false      # XLA
      cluster:                # multi_worker_mirrored: TF_CONFIG, these workers, or Slurm
        workers: [node1:12345, node2:12345]
        task_index: 0         # or KEXP_TASK_INDEX=... in each worker's environment

Only structure and the rules between keys are checked here (no TensorFlow); what the machine
really has is checked by :mod:`kexp.hardware` when a run starts.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, Field, model_validator

from kexp.config.schema.common import Bool, Float, INT32_MAX, Int, Section

_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})$")


def _host_port(value: str) -> str:
    match = _HOST_PORT.match(value)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise ValueError("expected host:port, e.g. node1:12345 (a port from 1 to 65535)")
    return value


#: ``host:port`` of one worker (a hostname, IPv4 address or ``[IPv6]``).
HostPort = Annotated[str, AfterValidator(_host_port)]

class ClusterSection(Section):
    """Where the workers of ``multi_worker_mirrored`` are, and which one this process is."""

    resolver: Literal["auto", "tf_config", "workers", "slurm"] = Field(
        "auto",
        description="auto: `workers` if given, else TF_CONFIG if set, else Slurm if inside a "
        "Slurm job step of several tasks, else a single worker.",
    )
    workers: Optional[list[HostPort]] = Field(
        None, min_length=1, description="host:port of every worker, the chief first."
    )
    task_index: Optional[Int] = Field(
        None, ge=0, description="This process's index in `workers` (or KEXP_TASK_INDEX)."
    )
    port: Int = Field(8888, gt=0, lt=65536, description="Slurm: first port on each node.")
    start_timeout: Float = Field(
        600, gt=0,
        description="Seconds a worker waits for every other worker to start before it gives "
        "up (exit 2) instead of waiting forever.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "ClusterSection":
        if self.workers is not None and self.resolver in ("tf_config", "slurm"):
            raise ValueError(
                f"'workers' is given but resolver is '{self.resolver}': "
                "remove one of them (resolver: workers or auto uses the list)"
            )
        if self.resolver == "workers" and self.workers is None:
            raise ValueError("resolver 'workers' needs the list 'workers: [host:port, ...]'")
        if self.task_index is not None and self.workers is None:
            raise ValueError("'task_index' only applies to a 'workers' list")
        if self.workers is not None and self.task_index is not None:
            if self.task_index >= len(self.workers):
                raise ValueError(
                    f"task_index {self.task_index} is out of range for "
                    f"{len(self.workers)} worker(s) (0..{len(self.workers) - 1})"
                )
        if self.workers is not None and len(set(self.workers)) != len(self.workers):
            raise ValueError("'workers' lists the same host:port twice")
        return self


class HardwareSection(Section):
    """Accelerator, tf.distribute strategy, precision and compilation."""

    accelerator: Literal["auto", "cpu", "gpu", "tpu"] = Field(
        "auto", description="auto uses what is there; gpu/tpu are errors when none is visible."
    )
    strategy: Literal[
        "auto", "default", "one_device", "mirrored", "multi_worker_mirrored", "tpu"
    ] = Field(
        "auto",
        description="auto: tpu when a TPU is asked for, multi_worker_mirrored when a cluster of "
        "several workers is configured, mirrored for several GPUs, one_device for one, "
        "default otherwise.",
    )
    gpus: Optional[list[Annotated[Int, Field(ge=0)]]] = Field(
        None, min_length=1, description="Indices of the GPUs to use; default: all visible."
    )
    memory_growth: Bool = Field(
        False, description="Let TensorFlow allocate GPU memory as needed instead of all at once."
    )
    memory_limit_mb: Optional[Int] = Field(
        None, gt=0, le=INT32_MAX,
        description="Cap the GPU memory TensorFlow may use on each GPU (MiB; at most 2^31-1, "
        "which TF turns into bytes within an int64).",
    )
    cpu_devices: Optional[Int] = Field(
        None, ge=1, le=64,
        description="Split the CPU into this many logical devices (to try mirrored training "
        "without GPUs); must be set before TensorFlow starts.",
    )
    tpu: Optional[str] = Field(
        None, min_length=1,
        description="TPU to connect to: 'local' (a TPU VM), a TPU name, or grpc://host:port.",
    )
    cluster: ClusterSection = Field(default_factory=ClusterSection)
    batch_per_replica: Bool = Field(
        False,
        description="data.batch_size is per replica (global = batch_size x replicas) instead "
        "of the global batch.",
    )
    mixed_precision: Literal["none", "float16", "bfloat16"] = Field(
        "none",
        description="Keras mixed-precision policy; float16 adds loss scaling; output layers "
        "stay float32.",
    )
    jit_compile: Bool = Field(False, description="Compile the train step with XLA.")
    steps_per_execution: Int = Field(
        1, gt=0, le=INT32_MAX,
        description="Batches per tf.function call (on TPU default 32); lowered to the largest "
        "divisor of an epoch's steps, with a warning (docs/hardware.md). At most 2^31-1: Keras "
        "counts the steps of one call in int32 (2^31 trained no step at all).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "HardwareSection":
        on_tpu = self.accelerator == "tpu" or self.strategy == "tpu" or self.tpu is not None
        if on_tpu:
            if self.accelerator not in ("auto", "tpu"):
                raise ValueError(
                    f"a TPU (strategy or tpu address) cannot run on accelerator "
                    f"'{self.accelerator}': use accelerator tpu or auto"
                )
            if self.strategy not in ("auto", "tpu"):
                raise ValueError(
                    f"strategy '{self.strategy}' cannot run on a TPU: use strategy tpu or auto"
                )
            if self.mixed_precision == "float16":
                raise ValueError("TPUs compute in bfloat16: use mixed_precision bfloat16")
        gpu_keys = [
            k for k in ("gpus", "memory_limit_mb") if getattr(self, k) is not None
        ] + (["memory_growth"] if self.memory_growth else [])
        if gpu_keys and self.accelerator in ("cpu", "tpu"):
            raise ValueError(
                f"{', '.join(gpu_keys)} configure GPUs, but accelerator is "
                f"'{self.accelerator}'"
            )
        if self.cpu_devices is not None and self.accelerator in ("gpu", "tpu"):
            raise ValueError(
                f"cpu_devices splits the CPU, but accelerator is '{self.accelerator}'"
            )
        cluster_set = self.cluster.model_fields_set
        if cluster_set and self.strategy not in ("auto", "multi_worker_mirrored"):
            raise ValueError(
                f"'cluster' only applies to strategy multi_worker_mirrored (or auto), "
                f"not '{self.strategy}'"
            )
        return self
