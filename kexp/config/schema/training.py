"""The ``train``, ``callbacks``, ``checkpoint`` and ``output`` sections: how ``fit`` runs and
where its results go.

    train: {epochs: 30}
    callbacks:
      - EarlyStopping: {monitor: val_loss, patience: 5, restore_best_weights: true}
    checkpoint: {monitor: val_accuracy, mode: max}
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from kexp.config.schema.common import KerasSpec, Section


class TrainSection(Section):
    """Arguments of ``model.fit`` that are not about data."""

    epochs: int = Field(10, gt=0, description="Number of epochs.")
    steps_per_epoch: Optional[int] = Field(
        None, gt=0, description="Batches per epoch; default: the whole training split."
    )
    validation_steps: Optional[int] = Field(None, gt=0)
    class_weight: Optional[dict[int, float]] = Field(
        None, description="Loss weight per class index (single-output classifiers).",
        # JSON object keys are text: say they must spell an integer (the class index)
        json_schema_extra={"propertyNames": {"pattern": "^-?[0-9]+$"}},
    )
    terminate_on_nan: bool = Field(
        True, description="Stop at the first NaN loss (keras.callbacks.TerminateOnNaN)."
    )


class CheckpointSection(Section):
    """kexp-managed checkpoints: the best model by a monitored metric, and the last one."""

    monitor: Optional[str] = Field(
        None, description="Metric to pick the best epoch; default: val_loss, or loss without validation."
    )
    mode: Literal["auto", "min", "max"] = "auto"
    save_best: bool = True
    save_last: bool = True


class OutputSection(Section):
    """Where the run directory goes and which model formats are written."""

    root: str = Field(
        "experiments", description="Root of run directories, relative to the working directory."
    )
    formats: list[Literal["keras", "h5"]] = Field(
        default_factory=lambda: ["keras", "h5"], min_length=1
    )
    tensorboard: bool = Field(True, description="Write TensorBoard logs to <run>/logs.")


CallbackList = list[KerasSpec]
