"""Plugins: the user's own Keras components, imported because the config names them.

A config lists Python files or modules under ``plugins:``; they are imported before the model
is built, and every Keras component they define becomes usable by name, exactly like a
built-in (a layer, loss, metric, optimizer, callback, learning-rate schedule, initializer,
regularizer, constraint or activation):

    plugins: [components.py]
    compile: {loss: {FocalLoss: {gamma: 2.0}}}

Keras finds custom objects through its own registry (``keras.saving.register_keras_serializable``),
which is also how a saved model finds them again when it is loaded. A plugin should decorate
its components itself, so that plain ``keras.models.load_model`` works after ``import``-ing
the module; components left undecorated are registered here, under the module's name as
package, so they still work by name and in kexp's own commands.

Each import is recorded (entry, module name, resolved file, sha256): the run's manifest keeps
the records, and ``kexp evaluate``/``predict``/``reproduce``/``resume`` import the same files
again, each under the module name the run recorded (so ``comp>Scale`` is always the class of the
file the run imported as ``comp``, never another plugin's). A changed plugin is reported by
evaluate/predict/reproduce and refused by resume; a missing one (or one that fails to import)
is refused, as a model built with its classes cannot be loaded faithfully without it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import traceback
import types
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from kexp.config.schema.plugins import is_file_entry
from kexp.errors import ConfigError, ConfigIssue, KeyPath


@dataclass(frozen=True)
class PluginRecord:
    """What was imported for one ``plugins`` entry, as the manifest stores it."""

    entry: str
    module: str
    path: str
    sha256: str
    search_path: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PluginError(Exception):
    """A plugin that cannot be found or imported; becomes a ConfigIssue at its entry."""


#: Records of the plugins imported in this process, by resolved file path.
_IMPORTED: dict[str, PluginRecord] = {}

#: Every public Keras class and function of every imported plugin module, as ``module>name``
#: (and under its own registered name): lookups by short name find components Keras cannot
#: register too (callbacks have no ``get_config``).
_OBJECTS: dict[str, Any] = {}


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def import_plugins(
    entries: Sequence[str], base_dir: Path | None, path: KeyPath = ("plugins",)
) -> list[PluginRecord]:
    """Import every entry (files relative to ``base_dir``); all failures in one ConfigError."""
    records: list[PluginRecord] = []
    issues: list[ConfigIssue] = []
    for index, entry in enumerate(entries):
        try:
            records.append(import_plugin(entry, base_dir))
        except PluginError as exc:
            issues.append(ConfigIssue(tuple(path) + (index,), str(exc)))
    if issues:
        raise ConfigError(issues)
    return records


def import_plugin(entry: str, base_dir: Path | None = None,
                  module_name: str | None = None) -> PluginRecord:
    """Import one plugin file or module and register its Keras components.

    ``module_name``: for a file, the module name a run recorded for it, so that its
    components get the registered names (``module>Name``) the run's model uses.
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if is_file_entry(entry):
        file = (base / Path(entry).expanduser()).resolve()
        module, search_path = _import_file(file, module_name), None
    else:
        module, search_path = _import_module(entry, base), str(base.resolve())
    file = getattr(module, "__file__", None)
    if not file:
        raise PluginError(f"plugin module '{entry}' has no source file (a namespace package?)")
    register_components(module)
    resolved = str(Path(file).resolve())
    record = PluginRecord(entry, module.__name__, resolved, sha256(file), search_path)
    _IMPORTED[record.path] = record
    return record


def _file_problem(file: Path) -> str | None:
    """Why ``file`` cannot be a plugin (missing, not .py), or None."""
    if not file.is_file():
        return f"plugin file not found: {file}"
    if file.suffix != ".py":
        return f"a plugin file must be a Python source file (.py): {file}"
    return None


def check_files(loaded: Any) -> None:
    """The plugin files a :class:`~kexp.config.loader.LoadedConfig` names exist.

    Checked right after the schema, before TensorFlow is imported (importing the plugins
    needs it, as their components subclass Keras'): a mistyped file name is answered in a
    fraction of a second instead of after TensorFlow's start-up. Module entries are found
    only by importing them, so they wait for :func:`import_config_plugins`.
    """
    issues = [
        ConfigIssue(("plugins", index), problem)
        for index, entry in enumerate(loaded.config.plugins)
        if is_file_entry(entry)
        and (problem := _file_problem(Path(entry).expanduser().resolve())) is not None
    ]
    if issues:
        base = loaded.file.parent if loaded.file is not None else None
        hint = _recorded_hint(base) if base is not None and _recorded_in(base) else None
        raise ConfigError(loaded.locate_issues(issues), hint=hint)


def _recorded_hint(run_dir: Path) -> str:
    """What a missing or broken plugin of a run's own config means, and what to do."""
    return (f"the run in {run_dir} was trained with these plugins (its manifest.json records "
            "each file and its sha256): its model cannot be rebuilt, resumed or loaded "
            "faithfully without them; restore the file as the run used it, or start a new run")


def _file_of(module: types.ModuleType | None) -> Path | None:
    file = getattr(module, "__file__", None) if module is not None else None
    return Path(file).resolve() if file else None


def _import_file(file: Path, recorded: str | None = None) -> types.ModuleType:
    """Import a plugin file: under ``recorded`` (the module name a run recorded for it),
    else under its stem, or ``kexp_plugin_<stem>_<hash>`` when the stem is another module's."""
    problem = _file_problem(file)
    if problem is not None:
        raise PluginError(problem)
    digest = sha256(file)
    previous = _IMPORTED.get(str(file))
    if (previous is not None and previous.sha256 == digest
            and (recorded is None or previous.module == recorded)
            and _file_of(sys.modules.get(previous.module)) == file):
        return sys.modules[previous.module]  # already imported, unchanged: do not run it twice
    name = recorded or (file.stem if file.stem.isidentifier() else "kexp_plugin")
    loaded = sys.modules.get(name)
    if loaded is not None:
        if previous is None and _file_of(loaded) == file:
            return loaded  # the user imported this very file already: Python's cache
        plugin = any(r.module == name for r in _IMPORTED.values())
        if _file_of(loaded) != file and not (recorded and plugin):
            name = f"kexp_plugin_{name}_{digest[:8]}"  # do not shadow an unrelated module
        # else: the run's name, held by another plugin file imported in this process (another
        # run's): this file takes it over, so that the run's model gets this file's classes
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import plugin file {file}")
    module = importlib.util.module_from_spec(spec)
    # Siblings of the plugin file are importable from it, as when Python runs a script; the
    # folder goes last so that it cannot shadow an installed module.
    folder = str(file.parent)
    if folder not in sys.path:
        sys.path.append(folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise PluginError(_import_failure(file.name, exc)) from exc
    return module


def _import_module(name: str, base: Path) -> types.ModuleType:
    folder = str(base.resolve())
    if folder not in sys.path:
        sys.path.append(folder)  # a module next to the config, after everything installed
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise PluginError(
                f"no module named '{name}' (searched the Python path and the config's "
                f"folder {folder}); to use a file, write its path ending in .py"
            ) from exc
        raise PluginError(_import_failure(name, exc)) from exc
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise PluginError(_import_failure(name, exc)) from exc


def _import_failure(what: str, exc: BaseException) -> str:
    """``cannot import plugin X: NameError: ... (file, line N)``: where the user must look."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        where = f" ({Path(exc.filename or what).name}, line {exc.lineno})"
        # its str() already ends with "(file, line N)": the bare message, so it is said once
        return f"cannot import plugin {what}: {type(exc).__name__}: {exc.msg}{where}"
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if _is_user_code(f.filename)]
    if mine:
        frame = mine[-1]
        where = f" ({Path(frame.filename).name}, line {frame.lineno})"
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        missing = f"it imports '{exc.name}', which is not installed"
        return f"cannot import plugin {what}: {missing}{where}"
    message = str(exc).strip().splitlines()
    first = message[0] if message else ""
    return f"cannot import plugin {what}: {type(exc).__name__}: {first}{where}"


def _is_user_code(filename: str) -> bool:
    """A frame in the user's code: not an installed package, the import machinery or kexp."""
    if filename.startswith("<"):
        return False
    path = Path(filename).resolve()
    installed = {"site-packages", "dist-packages"} & set(path.parts)
    return not installed and Path(__file__).resolve().parent not in path.parents


def _keras_bases() -> tuple[type, ...]:
    from kexp.tf import keras

    return (
        keras.layers.Layer,
        keras.losses.Loss,
        keras.metrics.Metric,
        keras.optimizers.Optimizer,
        keras.optimizers.schedules.LearningRateSchedule,
        keras.initializers.Initializer,
        keras.regularizers.Regularizer,
        keras.constraints.Constraint,
        keras.callbacks.Callback,
    )


def register_components(module: types.ModuleType) -> list[str]:
    """Register the module's own undecorated Keras classes and public functions with Keras.

    They go under the package ``module.__name__`` (``components>FocalLoss``). Objects the
    plugin registered itself keep their own names. Returns the names registered here.
    """
    from kexp.tf import keras

    bases = _keras_bases()
    added = []
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        is_component = inspect.isclass(obj) and issubclass(obj, bases)
        if not (is_component or inspect.isfunction(obj)):
            continue
        _OBJECTS[f"{module.__name__}>{name}"] = obj  # findable by short name, even a callback
        registered = keras.saving.get_registered_name(obj)
        if registered != obj.__name__:
            _OBJECTS[registered] = obj
            continue  # registered by the plugin itself
        if inspect.isclass(obj) and not hasattr(obj, "get_config"):
            continue  # not serializable (a callback): Keras cannot register it
        keras.saving.register_keras_serializable(package=module.__name__)(obj)
        added.append(keras.saving.get_registered_name(obj))
    return added


def plugin_objects() -> dict[str, Any]:
    """Public classes and functions of the imported plugins (for name lookups)."""
    return dict(_OBJECTS)


def records_for(entries: Sequence[str]) -> list[PluginRecord]:
    """The import records of a config's ``plugins`` entries, in order (for the manifest)."""
    out = []
    for entry in entries:
        resolved = str(Path(entry).resolve()) if is_file_entry(entry) else None
        for record in _IMPORTED.values():
            if record.entry == entry or record.path == resolved:
                out.append(record)
                break
    return out


def import_config_plugins(loaded: Any) -> list[PluginRecord]:
    """Import the plugins of a :class:`~kexp.config.loader.LoadedConfig` (before its model).

    A config that is a run's saved ``config.yaml`` (``kexp reproduce``, resume) imports each
    plugin file under the module name the run recorded (the registered names of its
    components are the run's), finds module plugins through the search path the run
    recorded, and reports a plugin file that changed since the run. (A resume has refused a
    changed one already: :func:`kexp.training.resume.plan_resume`.) A recorded plugin that
    is gone or fails to import is a ConfigError that says why it is needed.
    """
    base = loaded.file.parent if loaded.file is not None else Path.cwd()
    recorded = _recorded_in(base)
    if not recorded:
        return import_plugins(loaded.config.plugins, base)
    for record in recorded:
        if state(record)[0] == "changed":
            warn(f"plugin of the run: {record['path']} (content changed since the run)")
    by_entry = {r.get("entry"): r for r in recorded}
    records: list[PluginRecord] = []
    issues: list[ConfigIssue] = []
    for index, entry in enumerate(loaded.config.plugins):
        record = by_entry.get(entry) or {}
        where = Path(record["search_path"]) if record.get("search_path") else base
        name = record.get("module") if is_file_entry(entry) else None
        try:
            records.append(import_plugin(entry, where, name))
        except PluginError as exc:
            issues.append(ConfigIssue(("plugins", index), str(exc)))
    if issues:
        raise ConfigError(issues, hint=_recorded_hint(base))
    return records


def _recorded_in(run_dir: Path) -> list[dict[str, Any]]:
    """The plugin records of the manifest in ``run_dir``, if it is a run directory."""
    import json

    manifest = run_dir / "manifest.json"
    if not manifest.is_file():
        return []
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    records = data.get("plugins") if isinstance(data, dict) else None
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def warn(message: str) -> None:
    """A warning on stderr (stdout may carry predictions)."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[yellow]warning:[/yellow] {message}"
    )


def state(record: dict[str, Any]) -> tuple[str, str | None]:
    """How a recorded plugin's file compares with the run's record, and its sha256 now:
    ``same``, ``changed``, ``missing``, or ``unknown`` (nothing recorded to compare)."""
    file = record.get("path")
    if not file:
        return "unknown", None  # a module recorded without its file: nothing to compare
    try:
        digest = sha256(file)
    except OSError:
        return "missing", None
    if not record.get("sha256"):
        return "unknown", digest
    return ("same" if digest == record["sha256"] else "changed"), digest


def changed(records: Iterable[dict[str, Any]]) -> list[str]:
    """Recorded plugins whose file now differs from what the run used, or is gone."""
    notes = []
    for record in records:
        what = state(record)[0]
        if what == "changed":
            notes.append(f"{record['path']} (content changed since the run)")
        elif what == "missing":
            notes.append(f"{record['path']} (missing)")
    return notes


def load_recorded(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Import the plugins a run recorded in its manifest: what changed, and what is unavailable.

    Each file is imported from the path the run used, under the module name the run recorded
    (so the registered names its model uses find that file's classes, never those of another
    plugin file with the same name); a module entry by name, with its recorded search path,
    so the same module is found. A plugin that changed is still imported, and is in the first
    list (to warn about). One that is gone or fails to import is in the second: the caller
    decides whether the model can load faithfully without it (:mod:`kexp.runs`).
    """
    notes: list[str] = []
    unavailable: list[str] = []
    for record in records:
        file = record.get("path")
        entry = record.get("entry") or file or ""
        what, _ = state(record)
        try:
            if is_file_entry(entry):
                if what == "missing" or not file:
                    unavailable.append(f"{file or entry} is missing")
                    continue
                imported = import_plugin(str(file), module_name=record.get("module"))
            else:
                imported = import_plugin(entry, Path(record.get("search_path") or Path.cwd()))
        except PluginError as exc:
            unavailable.append(f"{file or entry} cannot be imported ({exc})")
            continue
        if what == "changed":
            notes.append(f"{file} (content changed since the run)")
        elif file and imported.path != str(Path(file).resolve()):
            notes.append(f"{entry} (now imported from {imported.path}; the run used {file})")
    return notes, unavailable
