"""The ``train``, ``callbacks``, ``checkpoint`` and ``output`` sections: how ``fit`` runs and
where its results go.

    train: {epochs: 30}
    callbacks:
      - EarlyStopping: {monitor: val_loss, patience: 5, restore_best_weights: true}
    checkpoint: {monitor: val_accuracy, mode: max}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BeforeValidator, Field

from kexp.config.schema.common import Bool, Float, INT32_MAX, Int, KerasSpec, Section


def _spelled_class_id(value: Any) -> Any:
    """``"3"`` -> 3: JSON object keys are text, so a config written as JSON spells them."""
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else value


#: A class index, as ``class_weight`` keys it: Keras casts labels to int32 to look their
#: weight up (keras.src.trainers.data_adapters), and builds a table of ``max(class) + 1``
#: weights.
ClassId = Annotated[Int, BeforeValidator(_spelled_class_id), Field(ge=0, le=INT32_MAX)]


class TrainSection(Section):
    """Arguments of ``model.fit`` that are not about data."""

    epochs: Int = Field(10, gt=0, description="Number of epochs.")
    steps_per_epoch: Optional[Int] = Field(
        None, gt=0, description="Batches per epoch; default: the whole training split."
    )
    validation_steps: Optional[Int] = Field(None, gt=0)
    class_weight: Optional[dict[ClassId, Annotated[Float, Field(ge=0)]]] = Field(
        None,
        description="Loss weight per class index (single-output classifiers): indices from 0 "
        "to the model's classes - 1 (checked against its output before training), weights >= 0 "
        "(a negative weight would train the model away from that class); a class left out "
        "weighs 1.0.",
        # JSON object keys are text: say they must spell a class index
        json_schema_extra={"propertyNames": {"pattern": "^[0-9]+$"}},
    )
    terminate_on_nan: Bool = Field(
        True, description="Stop at the first NaN loss (keras.callbacks.TerminateOnNaN)."
    )


class CheckpointSection(Section):
    """kexp-managed checkpoints: the best model by a monitored metric, and the last one."""

    monitor: Optional[str] = Field(
        None, description="Metric to pick the best epoch; default: val_loss, or loss without validation."
    )
    mode: Literal["auto", "min", "max"] = "auto"
    save_best: Bool = True
    save_last: Bool = True


def _not_blank(root: str) -> str:
    if not root.strip():  # a path "" is the working directory: say so rather than use it
        raise ValueError("is empty; write '.' for the working directory")
    return root


class OutputSection(Section):
    """Where the run directory goes and which model formats are written."""

    root: Annotated[str, AfterValidator(_not_blank)] = Field(
        "experiments",
        description="Root of run directories, relative to the working directory ('.' for "
        "the working directory itself).",
    )
    formats: list[Literal["keras", "h5"]] = Field(
        default_factory=lambda: ["keras", "h5"], min_length=1
    )
    tensorboard: Bool = Field(True, description="Write TensorBoard logs to <run>/logs.")


CallbackList = list[KerasSpec]
