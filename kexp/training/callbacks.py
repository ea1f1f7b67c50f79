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

A relative path given by the user is taken relative to the run directory too. A path the
user gives is checked before anything is read or built (:func:`check_callback_paths`): a
folder that cannot be made or written, a directory where a file is expected (or the
reverse), a name kexp itself writes in the run directory, another run's training state.
kexp adds ``history.csv`` (unless a declared ``CSVLogger`` writes that very file), and,
unless the user declared their own of the same class, a ``TensorBoard`` writing ``logs/``
(``output.tensorboard``), ``TerminateOnNaN`` (``train.terminate_on_nan``), and its best/last
checkpoints.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from kexp.config.schema import CheckpointSection, ExperimentConfig, spec_parts
from kexp.errors import ConfigError, ConfigIssue, KeyPath, format_path, nearest
from kexp.preflight import writable_problem
from kexp.resolve import accepted_kwargs, lookup, make_callback
from kexp.tf import keras
from kexp.training.artifacts import copy_file, save_model
from kexp.training.history import HistoryFile
from kexp.training.rundir import KEXP_FILES, KEXP_FOLDERS
from kexp.training.model_checkpoint import atomic_model_checkpoints
from kexp.training.nan import NanGuard
from kexp.training.stages import FineTuningStart
from kexp.training.state import STATE_FILE, with_training_state

_PATH_ARGS = {
    "TensorBoard": ("log_dir", "logs"),
    "CSVLogger": ("filename", "history.csv"),
    "ModelCheckpoint": ("filepath", "checkpoints/model.keras"),
    "BackupAndRestore": ("backup_dir", "backup"),
}

#: What each of those writes at its path: a file (the others write into a folder).
_WRITES = {
    "TensorBoard": ("its logs", False),
    "CSVLogger": ("the history", True),
    "ModelCheckpoint": ("its checkpoints", True),
    "BackupAndRestore": ("the training state", False),
}


#: Folders of a run directory whose every file kexp manages, and why nothing else goes there.
_WHOLLY_KEXPS = {"backup": "the training state a resume continues from",
                 "cache": "the data cache, removed on every resume"}

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
        last = self.directory / "last.keras"
        if self.section.save_last:
            save_model(self.model, last)
        if self.section.save_best and self.monitor in logs:
            value = float(logs[self.monitor])
            if self._better(value):
                self.best, self.best_epoch = value, epoch + 1
                if self.section.save_last:  # the same model: its bytes, not a second save
                    copy_file(last, self.directory / "best.keras")
                else:
                    save_model(self.model, self.directory / "best.keras")


class FolderCSVLogger(keras.callbacks.CSVLogger):
    """``keras.callbacks.CSVLogger`` that makes its file's folder when training begins.

    Keras' opens its file in a folder that must exist, while TensorBoard, ModelCheckpoint and
    BackupAndRestore make theirs; kexp checks before training that each can be made
    (:func:`check_callback_paths`), so a ``filename`` in a new folder works for all four.
    """

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if "://" not in str(self.filename):  # (a URL is tf.io.gfile's)
            Path(self.filename).parent.mkdir(parents=True, exist_ok=True)
        super().on_train_begin(logs)


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """``keras.callbacks.TensorBoard`` without its per-step calls that write nothing.

    With ``update_freq: epoch`` (the default) Keras still calls ``summary.scalar`` for every
    logged value at every step; it writes batch summaries only through the default writer it
    sets for a numeric ``update_freq``, so with ``epoch`` those calls write nothing, yet cost
    about 0.4 ms a step: a few percent of a small model's epoch. The same files are written;
    the per-step graph and profiler work still goes through Keras.
    """

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        super().on_train_batch_end(batch, logs if self.update_freq != "epoch" else None)


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


def _csv_logger_writes_history(config: ExperimentConfig, run_dir: Path) -> bool:
    """Whether a declared ``CSVLogger`` writes the run's ``history.csv`` itself (as one
    without a ``filename`` does); kexp then writes no history of its own."""
    target = (run_dir / "history.csv").absolute()
    for spec in config.callbacks:
        name, _ = spec_parts(spec)
        if name == "CSVLogger":
            _, kwargs = spec_parts(_in_run_dir(spec, run_dir))
            if Path(kwargs["filename"]).absolute() == target:
                return True
    return False


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
            callback = make_callback(_in_run_dir(spec, run_dir), ("callbacks", index))
        except ConfigError as exc:
            issues.extend(exc.issues)
            continue
        if type(callback) is keras.callbacks.CSVLogger:
            callback.__class__ = FolderCSVLogger  # the same instance; makes its folder
        elif type(callback) is keras.callbacks.TensorBoard:
            callback.__class__ = EpochTensorBoard  # the same instance and files, cheaper steps
        callbacks.append(callback)
    if issues:
        raise ConfigError(issues)

    if not _csv_logger_writes_history(config, run_dir):
        # kexp's writer: atomic, each epoch once across resumes; beside a CSVLogger of the
        # user's that writes elsewhere, since the run directory always has its history.csv
        callbacks.append(HistoryFile(run_dir / "history.csv"))
    if config.output.tensorboard and "TensorBoard" not in declared:
        callbacks.append(EpochTensorBoard(log_dir=str(run_dir / "logs")))
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


def logged_names(metric_names: set[str], config: ExperimentConfig) -> set[str]:
    """The names an epoch of this run logs (``loss``, ``accuracy``, ``digit_loss``, ...,
    ``val_`` ones with validation data), from ``metric_names``: what the compiled loss and
    metrics logged for real examples (:func:`kexp.training.probe.check_data_fits`; Keras
    names the compiled metrics only when it builds them, at their first update)."""
    names = set(metric_names)
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


def check_monitors(model: Any, metric_names: set[str], config: ExperimentConfig) -> None:
    """Every ``monitor`` names a value this run logs, and one Keras can tell the direction of.

    ``checkpoint.monitor`` and the ``monitor`` of every declared callback that takes one
    (EarlyStopping, ReduceLROnPlateau, ModelCheckpoint, a plugin's callback), given or its
    default. Unchecked, a misspelt one never triggered (kexp's best checkpoint was never
    written) or crashed at the first epoch end (Keras' "isn't able to automatically determine
    whether that metric should be maximized or minimized", also for a correct name of a
    metric without a declared direction, such as a plugin's function). ``metric_names`` are
    what the compiled model logged for real examples (:func:`logged_names`), so this runs
    after ``check_data_fits``, still before a run directory exists.
    """
    names = logged_names(metric_names, config)
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


# ------------------------------------------------------------ checks before data and model


def check_callback_paths(config: ExperimentConfig, run_dir: Path, new_run: bool = True) -> None:
    """The paths the config gives callbacks (TensorBoard ``log_dir``, CSVLogger ``filename``,
    ModelCheckpoint ``filepath``, BackupAndRestore ``backup_dir``) can be written.

    Unchecked, each failed only when the callback first wrote: an ``IsADirectoryError`` or a
    ``NotFoundError`` traceback at the start of training or after the first epoch, the run
    left ``failed``. Checked as the output root is (:mod:`kexp.preflight`), from the config
    alone, before any data is read: the folder must be (or be creatable as) a writable
    directory, and a file must not be expected where a directory is (or the reverse). The
    defaults are in the run directory, which kexp makes; a relative path given there must not
    land on what kexp writes itself (``manifest.json``, ``checkpoints/``, ...). A new run
    must not take over a ``backup_dir`` that holds another run's training state.
    ``run_dir`` is the run directory, or where a new one will be (its name is drawn later).
    URLs (``gs://...``) are tf.io.gfile's and are left alone.
    """
    issues: list[ConfigIssue] = []
    declared = {spec_parts(spec)[0] for spec in config.callbacks}
    kexp_files = dict(KEXP_FILES)
    kexp_folders = list(KEXP_FOLDERS)
    if not _csv_logger_writes_history(config, run_dir):
        kexp_files["history.csv"] = "history"
    if config.output.tensorboard and "TensorBoard" not in declared:
        kexp_folders.append("logs")
    if "BackupAndRestore" not in declared:
        kexp_folders.append("backup")
    for index, spec in enumerate(config.callbacks):
        name, kwargs = spec_parts(spec)
        if name not in _PATH_ARGS:
            continue
        arg = _PATH_ARGS[name][0]
        given = kwargs.get(arg)
        if not isinstance(given, str) or "://" in given:
            continue  # the default (in the run directory), a URL, or a type Keras refuses
        appends = bool(kwargs.get("append")) if name == "CSVLogger" else False
        problem = _path_problem(name, given, Path(run_dir), kexp_files, kexp_folders,
                                new_run and not appends)
        if problem:
            issues.append(ConfigIssue(("callbacks", index, name, arg), problem))
    if issues:
        raise ConfigError(issues)


def _path_problem(name: str, given: str, run_dir: Path, kexp_files: dict[str, str],
                  kexp_folders: list[str], new_run: bool) -> str | None:
    """What is wrong with the path ``given`` to callback ``name`` (None: nothing).

    ``new_run``: a run that does not own what is already at the path (a new run, and not a
    CSVLogger appending), so an existing file there would be another run's, overwritten.
    """
    what, is_file = _WRITES[name]
    target = Path(os.path.normpath(run_dir / given))
    parts = target.parts
    templated = next((i for i, part in enumerate(parts) if "{" in part), None)
    if templated is not None:  # ModelCheckpoint fills in {epoch}, {val_loss:.2f}, ...
        target, is_file = Path(*parts[:templated]), False  # the folder above: that much is known
    try:
        inside = target.relative_to(run_dir).as_posix()
    except ValueError:
        inside = None
    if inside is not None:  # in the new run directory: only kexp's own names can clash
        if inside in kexp_files:
            return (f"{given} is the run's {kexp_files[inside]}, which kexp writes there: "
                    f"{name} and kexp would overwrite each other's file; choose another name")
        if is_file and (inside == "." or inside in kexp_folders):
            folder = "the run directory itself" if inside == "." else \
                f"kexp's folder {inside}/ in the run directory"
            return f"{given} is {folder}, but {name} writes {what} to a file there"
        owner = inside.split("/", 1)[0]
        if "/" in inside and owner in _WHOLLY_KEXPS and owner in kexp_folders:
            return (f"{given} is inside kexp's folder {owner}/ in the run directory, whose "
                    f"files kexp replaces and deletes ({_WHOLLY_KEXPS[owner]}); choose a "
                    "path outside it")
        return None
    if is_file:
        if target.is_dir():
            return (f"{target} is a directory, but {name} writes {what} to a file: give a "
                    f"file name in it (e.g. {target / _PATH_ARGS[name][1].split('/')[-1]})")
        if new_run and target.exists():
            return (f"{target} already exists (an earlier run's?) and {name} would overwrite "
                    "it: give a relative path (it goes into the new run directory), a new "
                    "file name" + (", or append: true" if name == "CSVLogger" else ""))
        folder = target.parent
    else:
        if target.exists() and not target.is_dir():
            return f"{target} is a file, but {name} writes {what} into a directory"
        if name == "BackupAndRestore" and new_run and (target / STATE_FILE).exists():
            return (f"{target} holds the training state of another run ({STATE_FILE}); a new "
                    "run would replace it, and that run could no longer be resumed: give an "
                    "empty or new folder (kexp resume RUN_DIR continues the other run)")
        folder = target
    problem = writable_problem(folder)
    return None if problem is None else f"{name} cannot write {what} there: {problem}"


def check_swap_ema(config: ExperimentConfig, model: Any) -> None:
    """A ``SwapEMAWeights`` callback needs an optimizer with ``use_ema: true``.

    The callback swaps the optimizer's moving averages of the weights into the model; an
    optimizer keeps them only with ``use_ema``. Without, Keras raises at the first
    evaluation, after an epoch of training, with the run left ``failed``.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return  # the model did not build: reported where it is built
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's own
    if any(getattr(o, "use_ema", False) for o in getattr(inner, "optimizers", None) or [inner]):
        return
    issues: list[ConfigIssue] = []
    for index, spec in enumerate(config.callbacks):
        name = spec_parts(spec)[0]
        try:
            cls = lookup("callback", name, ("callbacks", index))
        except ConfigError:
            continue  # reported where the callbacks are built
        if isinstance(cls, type) and issubclass(cls, keras.callbacks.SwapEMAWeights):
            issues.append(ConfigIssue(("callbacks", index, name), (
                f"{name} swaps in the optimizer's moving average of the weights, which the "
                f"optimizer keeps only with use_ema: true; {_use_ema_fix(config, inner)}")))
    if issues:
        raise ConfigError(issues)


def _use_ema_fix(config: ExperimentConfig, optimizer: Any) -> str:
    name, kwargs = spec_parts(config.compile.optimizer)
    if isinstance(config.compile.optimizer, str):
        return (f"compile.optimizer is '{name}': write it as "
                f"{{{type(optimizer).__name__}: {{use_ema: true}}}}")
    at: KeyPath = ("compile", "optimizer", name, "use_ema")
    return f"set {format_path(at)}: true" + (" (it is false)" if "use_ema" in kwargs else "")
