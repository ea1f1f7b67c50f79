"""Batch size semantics under a strategy.

``data.batch_size`` is the GLOBAL batch: one training step consumes that many examples in
total, split evenly over the replicas (``tf.distribute`` rebatches the dataset). This keeps
the optimisation the same on 1 or 8 devices: same step size, same number of steps per epoch.

``hardware.batch_per_replica: true`` reads ``data.batch_size`` per replica instead (global =
batch_size x replicas), the convention of many multi-GPU scripts: per-device memory stays the
same when devices are added. The run's saved config then holds the global batch it used, so
rerunning it reproduces the same optimisation on any number of devices.

A global batch that does not split evenly over the replicas is an error with the numbers.

The last, partial training batch of an epoch is another matter: its size comes from the data
(examples mod batch), and ``tf.distribute`` splits it as evenly as it can (3 examples over 2
replicas: 2 and 1). Keras averages the loss on each replica and weights the replicas
equally, so the examples of the smaller share weigh more, and that one step per epoch is not
the step a single device takes. Keras offers no clean way to weight the replicas by their
examples (its per-replica mean divides by the local batch size), and dropping the remainder
behind the user's back would train on different data than asked. So kexp keeps the data,
warns at ``data.batch_size`` with the numbers (:func:`check_last_batch`), records a note in
the manifest, and ``data.drop_remainder: true`` is the remedy that makes the runs match.
Validation and test metrics are exact either way (Keras sums metric states across replicas).
"""

from __future__ import annotations

import warnings
from typing import Any

from kexp.config.schema import ExperimentConfig
from kexp.config.schema.data import DataSection
from kexp.errors import ConfigError, ConfigIssue, ConfigWarning


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


def uneven_last_batch(examples: int, batch: int, replicas: int, drop_remainder: bool) -> int:
    """Size of the last training batch if the replicas would share it unevenly, else 0."""
    last = 0 if drop_remainder or replicas < 2 else examples % batch
    return last if last % replicas else 0


def check_last_batch(info: Any, examples: int, data: DataSection) -> None:
    """Warn (and note in ``info.facts``) when each epoch ends with an unevenly split batch.

    ``info`` is the run's :class:`~kexp.hardware.strategy.StrategyInfo`.
    """
    last = uneven_last_batch(examples, data.batch_size, info.replicas, data.drop_remainder)
    if not last:
        return
    full = examples // data.batch_size
    note = (f"the last training batch of each epoch ({last} examples) is split unevenly over "
            f"the {info.replicas} replicas")
    warnings.warn(ConfigWarning(ConfigIssue(
        ("data", "batch_size"),
        f"{note} ({examples} = {full} x {data.batch_size} + {last}); Keras averages the loss "
        "on each replica and weights the replicas equally, so that step differs from a "
        "single-device run's. Set data.drop_remainder: true to train on full batches only "
        "(then the runs match), or leave it to keep every example",
        severity="warning",
    )), stacklevel=2)
    info.facts.setdefault("notes", []).append(
        f"{note}: the replicas' losses are weighted equally in that step "
        "(data.drop_remainder: true avoids it)")
