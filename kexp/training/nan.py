"""A NaN or infinite loss ends the run as ``failed``, with the last good checkpoint kept.

Keras' ``TerminateOnNaN`` by default only sets ``model.stop_training``: Keras then finishes the
epoch as if it were complete, running validation and every ``on_epoch_end``, so checkpoints,
history and the training state would record the diverged weights as an epoch. kexp's
:class:`NanGuard` is ``TerminateOnNaN`` with ``raise_error=True`` semantics: it raises at the
step where the loss stopped being finite, before any callback after it sees that step, so
``checkpoints/last.keras`` and the saved state stay those of the last good epoch (or step).
The error names the epoch and step, and the checkpoint to go back to.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from kexp.errors import TrainingFailed
from kexp.tf import keras


class LossNotFinite(TrainingFailed):
    """The loss became NaN or infinite; :attr:`details` goes into the manifest."""

    def __init__(self, message: str, details: dict[str, Any]):
        super().__init__(message)
        self.details = details


class NanGuard(keras.callbacks.TerminateOnNaN):
    """Stop at the first step whose loss is NaN or infinite (``train.terminate_on_nan``)."""

    def __init__(self, checkpoint: Path | None = None, steps_per_epoch: int | None = None):
        super().__init__(raise_error=True)
        self.checkpoint = checkpoint
        self.steps_per_epoch = steps_per_epoch
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        value = float(loss)
        if math.isfinite(value):
            return
        of = f"/{self.steps_per_epoch}" if self.steps_per_epoch else ""
        where = f"epoch {self.epoch + 1}, step {batch + 1}{of}"
        good = self.checkpoint if self.checkpoint is not None and self.checkpoint.is_file() else None
        if good is not None:
            keep = f"the last good checkpoint is kept: {good}"
        elif self.epoch == 0:
            keep = "no checkpoint exists yet (it diverged in the first epoch)"
        else:
            keep = "no checkpoint was saved (checkpoint.save_last is off)"
        raise LossNotFinite(
            f"training stopped: the loss became {value} at {where}; {keep}. Lower the "
            "learning rate, check the data for NaN/inf values, or clip gradients "
            "(optimizer clipnorm)",
            {
                "failure": {
                    "reason": "loss not finite",
                    "loss": str(value),
                    "epoch": self.epoch + 1,
                    "step": batch + 1,
                    "last_good_checkpoint": str(good) if good else None,
                }
            },
        )
