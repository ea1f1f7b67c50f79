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
import tempfile
from pathlib import Path
from typing import Any, Mapping

from kexp.config.schema import CheckpointSection, ExperimentConfig, spec_parts
from kexp.errors import ConfigError, ConfigIssue, nearest
from kexp.resolve import accepted_kwargs, lookup, make_callback
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


def _in_run_dir(spec: Any, run_dir: Path) -> Any:
    """``spec`` with the path its callback writes in (or relative to) ``run_dir``."""
    name, kwargs = spec_parts(spec)
    if name not in _PATH_ARGS:
        return spec
    arg, default = _PATH_ARGS[name]
    given = kwargs.get(arg)
    return {name: {**kwargs, arg: str(run_dir / (default if given is None else given))}}


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
        try:
            callbacks.append(make_callback(_in_run_dir(spec, run_dir), ("callbacks", index)))
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


#: Callbacks that put the optimizer's ``learning_rate`` into the logs of each epoch.
_LR_LOGGERS = (keras.callbacks.ReduceLROnPlateau, keras.callbacks.LearningRateScheduler)


def logged_names(model: Any, arrays: Any, config: ExperimentConfig) -> set[str]:
    """The names an epoch of this run logs (``loss``, ``accuracy``, ``digit_loss``, ...,
    ``val_`` ones with validation data), as Keras itself makes them.

    Keras builds the compiled metrics at the first step, and names them then (by output for
    a multi-output model), so a few real examples go through the model, the compiled loss and
    the compiled metrics; their results are an epoch's logs. The metrics are reset after
    (``fit`` resets them at every epoch anyway).
    """
    x, y = arrays.head(8)
    with model.distribute_strategy.scope():  # metric variables made where fit makes them
        y_pred = model(x, training=False)
        model.compute_loss(x=x, y=y, y_pred=y_pred)
        names = set(model.compute_metrics(x, y, y_pred, sample_weight=None))
    model.reset_metrics()
    if config.data.validation is not None:
        names |= {f"val_{name}" for name in names}
    if any(issubclass(cls, _LR_LOGGERS) for cls in _declared_classes(config)):
        names.add("learning_rate")
    return names


def _declared_classes(config: ExperimentConfig) -> list[type]:
    classes = []
    for index, spec in enumerate(config.callbacks):
        try:
            classes.append(lookup("callback", spec_parts(spec)[0], ("callbacks", index)))
        except ConfigError:
            continue  # reported where the callbacks are built
    return [cls for cls in classes if isinstance(cls, type)]


def check_monitors(model: Any, arrays: Any, config: ExperimentConfig) -> None:
    """Every ``monitor`` names a value this run logs, and one Keras can tell the direction of.

    ``checkpoint.monitor`` and the ``monitor`` of every declared callback that takes one
    (EarlyStopping, ReduceLROnPlateau, ModelCheckpoint, a plugin's callback), given or its
    default. Unchecked, a misspelt one never triggered (kexp's best checkpoint was never
    written) or crashed at the first epoch end (Keras' "isn't able to automatically determine
    whether that metric should be maximized or minimized", also for a correct name of a
    metric without a declared direction, such as a plugin's function). Needs the compiled
    model and the data (:func:`logged_names`), so it runs after ``check_data_fits``, still
    before a run directory exists.
    """
    names = logged_names(model, arrays, config)
    issues: list[ConfigIssue] = []
    monitor = config.checkpoint.monitor
    if monitor and monitor not in names:
        issues.append(_unlogged(("checkpoint", "monitor"), "the best checkpoint", monitor,
                                True, names, config))
    scratch = Path(tempfile.gettempdir()) / "kexp-callback-check"
    for index, spec in enumerate(config.callbacks):
        name, kwargs = spec_parts(spec)
        try:
            callback = make_callback(_in_run_dir(spec, scratch), ("callbacks", index))
        except ConfigError:
            continue  # reported where the callbacks are built
        monitor = getattr(callback, "monitor", None)
        if not isinstance(monitor, str) or "monitor" not in (accepted_kwargs(type(callback)) or ()):
            continue
        given = "monitor" in kwargs
        if not given and isinstance(callback, keras.callbacks.ModelCheckpoint) \
                and not callback.save_best_only:
            continue  # its default monitor is not used
        path: tuple[str | int, ...] = ("callbacks", index, name)
        if monitor not in names:
            issues.append(_unlogged(path + (("monitor",) if given else ()), name, monitor,
                                    given, names, config))
        elif not _direction_known(callback, model):
            likely = "max" if any(w in monitor.lower() for w in _MAX_WORDS) else "min"
            issues.append(ConfigIssue(
                path + (("mode",) if "mode" in kwargs else ()),
                f"with mode: auto, Keras cannot tell whether a higher or a lower '{monitor}' "
                "is better (it fails at the first epoch end; so for every metric of a "
                "multi-output model, and for a metric function); give mode: max or mode: min "
                f"(probably {likely})",
            ))
    if issues:
        raise ConfigError(issues)


def _unlogged(path: tuple[str | int, ...], who: str, monitor: str, given: bool,
              names: set[str], config: ExperimentConfig) -> ConfigIssue:
    default = "" if given else " (its default)"
    why = ""
    if monitor.startswith("val_") and config.data.validation is None:
        why = "; there is no validation data (data.validation), so nothing is logged as val_*"
    return ConfigIssue(
        path,
        f"{who} monitors '{monitor}'{default}, which this run does not log{why}; it logs "
        + ", ".join(sorted(names)),
        suggestion=nearest(monitor, names),
    )


def _direction_known(callback: Any, model: Any) -> bool:
    """Whether Keras' own choice of min or max for ``mode: auto`` succeeds, as it will be
    made at the first epoch end (``MonitorCallback._set_monitor_op``)."""
    settle = getattr(callback, "_set_monitor_op", None)
    if getattr(callback, "mode", None) != "auto" or not callable(settle):
        return True
    callback.set_model(model)
    try:
        settle()
    except ValueError:
        return False
    return True
