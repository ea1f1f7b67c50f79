"""The callbacks of a run: the user's (any Keras callback by name) plus kexp's own.

Paths a callback writes default into the run directory, so a config never needs to know
where its run will live:

==================  =============================  ============================
callback            argument                       default
==================  =============================  ============================
TensorBoard         ``log_dir``                    ``<run>/logs``
CSVLogger           ``filename``                   ``<run>/history.csv``
ModelCheckpoint     ``filepath``                   ``<run>/checkpoints/model.keras``
BackupAndRestore    ``backup_dir``                 ``<run>/backup``
==================  =============================  ============================

A relative path given by the user is taken relative to the run directory too.
kexp adds, unless the user declared their own of the same class: a ``CSVLogger`` writing
``history.csv``, a ``TensorBoard`` writing ``logs/`` (``output.tensorboard``),
``TerminateOnNaN`` (``train.terminate_on_nan``), and its best/last checkpoints.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from kexp.config.schema import CheckpointSection, ExperimentConfig, spec_parts
from kexp.errors import ConfigError, ConfigIssue
from kexp.resolve import make_callback
from kexp.tf import keras
from kexp.training.artifacts import save_model
from kexp.training.history import HistoryFile
from kexp.training.model_checkpoint import atomic_model_checkpoints
from kexp.training.nan import NanGuard
from kexp.training.stages import FineTuningStart
from kexp.training.state import with_training_state

_PATH_ARGS = {
    "TensorBoard": ("log_dir", "logs"),
    "CSVLogger": ("filename", "history.csv"),
    "ModelCheckpoint": ("filepath", "checkpoints/model.keras"),
    "BackupAndRestore": ("backup_dir", "backup"),
}

#: Metrics whose best value is the largest (as Keras' own ``mode="auto"`` decides).
_MAX_WORDS = ("acc", "auc", "precision", "recall", "f1", "iou", "r2")


class Checkpoints(keras.callbacks.Callback):
    """kexp's own checkpoints: ``checkpoints/last.keras`` every epoch, ``best.keras`` on improvement.

    Each is written atomically (temporary file, then rename), so a kill while saving leaves
    the previous checkpoint intact.
    """

    def __init__(self, directory: Path, section: CheckpointSection, monitor: str):
        super().__init__()
        self.directory = Path(directory)
        self.section = section
        self.monitor = monitor
        mode = section.mode
        if mode == "auto":
            name = monitor.lower()
            mode = "max" if any(w in name for w in _MAX_WORDS) else "min"
        self.mode = mode
        self.best: float | None = None
        self.best_epoch: int | None = None

    #: Saved with the training state, so a resumed run keeps its best (kexp.training.callback_state).
    state_attributes = ("best", "best_epoch")

    def _better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        logs = logs or {}
        if self.section.save_last:
            save_model(self.model, self.directory / "last.keras")
        if self.section.save_best and self.monitor in logs:
            value = float(logs[self.monitor])
            if self._better(value):
                self.best, self.best_epoch = value, epoch + 1
                save_model(self.model, self.directory / "best.keras")


def default_monitor(config: ExperimentConfig) -> str:
    """``checkpoint.monitor``, or val_loss when there is validation data, else loss."""
    if config.checkpoint.monitor:
        return config.checkpoint.monitor
    return "val_loss" if config.data.validation is not None else "loss"


def build_callbacks(config: ExperimentConfig, run_dir: Path) -> tuple[list[Any], Checkpoints | None]:
    """The user's callbacks with run-directory defaults, then kexp's own."""
    issues: list[ConfigIssue] = []
    callbacks: list[Any] = []
    declared: set[str] = set()
    backup_kwargs: dict[str, Any] | None = None
    for index, spec in enumerate(config.callbacks):
        name, kwargs = spec_parts(spec)
        declared.add(name)
        if name == "BackupAndRestore":
            backup_kwargs = kwargs
        defaults: dict[str, Any] = {}
        if name in _PATH_ARGS:
            arg, default = _PATH_ARGS[name]
            given = kwargs.get(arg)
            defaults[arg] = str(run_dir / default) if given is None else str(run_dir / given)
            spec = {name: {**kwargs, arg: defaults[arg]}}
        try:
            callbacks.append(make_callback(spec, ("callbacks", index)))
        except ConfigError as exc:
            issues.extend(exc.issues)
    if issues:
        raise ConfigError(issues)

    if "CSVLogger" not in declared:  # kexp's writer: atomic, each epoch once across resumes
        callbacks.append(HistoryFile(run_dir / "history.csv"))
    if config.output.tensorboard and "TensorBoard" not in declared:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs")))
    if config.train.terminate_on_nan or "TerminateOnNaN" in declared:
        # first, and raising: the diverged step reaches no other callback (kexp.training.nan)
        callbacks = [c for c in callbacks if not isinstance(c, keras.callbacks.TerminateOnNaN)]
        last = run_dir / "checkpoints" / "last.keras" if config.checkpoint.save_last else None
        callbacks.insert(0, NanGuard(last))
    checkpoints = None
    if config.checkpoint.save_best or config.checkpoint.save_last:
        checkpoints = Checkpoints(run_dir / "checkpoints", config.checkpoint, default_monitor(config))
        callbacks.append(checkpoints)
    if config.freeze is not None and config.freeze.epochs:
        # first: a stop of the frozen stage is settled before any callback sees stage 2
        callbacks.insert(0, FineTuningStart(config.freeze.epochs, list(callbacks)))
    # the training state for resume: BackupAndRestore, kexp's (kexp.training.state); and a
    # declared ModelCheckpoint writes atomically (kexp.training.model_checkpoint)
    callbacks = atomic_model_checkpoints(with_training_state(callbacks, backup_kwargs, run_dir))
    return callbacks, checkpoints
