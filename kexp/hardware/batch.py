"""Batch size semantics under a strategy.

``data.batch_size`` is the GLOBAL batch: one training step consumes that many examples in
total, split evenly over the replicas (``tf.distribute`` rebatches the dataset). This keeps
the optimisation the same on 1 or 8 devices: same step size, same number of steps per epoch.

``hardware.batch_per_replica: true`` reads ``data.batch_size`` per replica instead (global =
batch_size x replicas), the convention of many multi-GPU scripts: per-device memory stays the
same when devices are added. The run's saved config then holds the global batch it used, so
rerunning it reproduces the same optimisation on any number of devices.

A global batch that does not split evenly over the replicas is an error with the numbers.
"""

from __future__ import annotations

from typing import Any

from kexp.config.schema import ExperimentConfig
from kexp.errors import ConfigError


def global_batch(config: ExperimentConfig, replicas: int, strategy: str) -> tuple[ExperimentConfig, dict[str, Any]]:
    """``config`` with ``data.batch_size`` the global batch, and the batch record."""
    given = config.data.batch_size
    per_replica_given = config.hardware.batch_per_replica
    if per_replica_given:
        total = given * replicas
        config = config.model_copy(update={
            "data": config.data.model_copy(update={"batch_size": total}),
            "hardware": config.hardware.model_copy(update={"batch_per_replica": False}),
        })
    else:
        total = given
        if total % replicas:
            lower = total - total % replicas
            options = f"{lower} or {lower + replicas}" if lower else str(replicas)
            raise ConfigError.single(
                ("data", "batch_size"),
                f"the global batch size {total} does not split over the {replicas} replicas "
                f"of the {strategy} strategy ({total} / {replicas} = {total / replicas:g}): "
                f"use a multiple of {replicas} such as {options}, or set "
                "hardware.batch_per_replica: true to give the batch per replica",
            )
    record = {
        "global": total,
        "per_replica": total // replicas,
        "replicas": replicas,
        "given_as": "per_replica" if per_replica_given else "global",
    }
    return config, record
