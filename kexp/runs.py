"""Find what a command was pointed at: a run directory or a saved model file.

    >>> target = resolve_target("experiments/digits-cnn/20261203-120000-ab12cd")  # doctest: +SKIP
    >>> target.model_file.name, target.config is not None                         # doctest: +SKIP
    ('model.keras', True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kexp.config.loader import LoadedConfig, load_config
from kexp.errors import UserError
from kexp.manifest import FILENAME as MANIFEST, Manifest

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass
class Target:
    """A saved model, and the run it belongs to when there is one."""

    model_file: Path
    run_dir: Path | None = None
    loaded: LoadedConfig | None = None

    #: Warnings about the run's plugins (changed or missing since the run), already shown.
    plugin_notes: tuple[str, ...] = ()

    @property
    def config(self) -> Any:
        return self.loaded.config if self.loaded else None

    @property
    def safe_mode(self) -> bool:
        """Keras' safe mode for loading: off only when the run's config opted in."""
        return not (self.config is not None and self.config.allow_unsafe_deserialization)

    def manifest(self) -> Manifest | None:
        if self.run_dir and (self.run_dir / MANIFEST).is_file():
            return Manifest.load(self.run_dir)
        return None


def resolve_target(target: str | Path) -> Target:
    """A run directory (uses its ``model.keras``, else ``model.h5``) or a model file.

    The plugins the run used are imported again, so its custom components load.
    """
    return _with_plugins(_find_target(target))


def _with_plugins(target: Target) -> Target:
    """Import the run's plugins (as its manifest recorded them) and report changed ones.

    A recorded plugin that is gone or fails to import is refused (UserError), unless the
    model saves no custom component at all: with one missing, the model's registered names
    could find another plugin's class of the same name, or none, and the results would not
    be the run's. A changed plugin is only warned about (usually a fix the user wants).
    """
    from kexp.plugins import load_recorded, warn

    manifest = target.manifest()
    records = manifest.data.get("plugins") if manifest is not None else None
    if not isinstance(records, list):
        records = None
    if not records and target.config is not None and target.config.plugins:
        from kexp.config.schema.plugins import is_file_entry

        records = [  # a run without a manifest: its config still names the plugins
            {"entry": e, "path": e if is_file_entry(e) else None, "search_path": str(target.run_dir)}
            for e in target.config.plugins
        ]
    if not records:
        return target
    notes, unavailable = load_recorded([r for r in records if isinstance(r, dict)])
    if unavailable and uses_custom_objects(target.model_file):
        raise UserError(
            f"cannot load {target.model_file} faithfully: its run was trained with plugin "
            f"code that is not available now: {'; '.join(unavailable)}. A model built with a "
            "plugin's classes cannot be loaded faithfully without that plugin (its components' "
            "names would find another plugin's class of the same name, or none). Restore the "
            "file as the run used it (manifest.json records its path and sha256)"
        )
    notes += [f"{what} (the model saves no custom component, so it is not needed)"
              for what in unavailable]
    for note in notes:
        warn(f"plugin of the run: {note}")
    target.plugin_notes = tuple(notes)
    return target


def uses_custom_objects(model_file: Path) -> bool:
    """Whether a saved model names a registered custom component (``package>Name``: every
    custom class or function Keras registers has one, no built-in has). True when the model's
    config cannot be read: then a plugin cannot be said to be unneeded."""
    import zipfile

    try:
        if model_file.suffix == ".keras":
            with zipfile.ZipFile(model_file) as archive:
                text = archive.read("config.json").decode("utf-8")
        else:
            import h5py

            with h5py.File(model_file, "r") as h5:
                parts = [h5.attrs.get(key) for key in ("model_config", "training_config")]
            text = "".join(p.decode("utf-8") if isinstance(p, bytes) else str(p)
                           for p in parts if p is not None)
    except Exception:
        return True
    if not text:
        return True
    return ">" in text


def _find_target(target: str | Path) -> Target:
    path = Path(target)
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise UserError(f"{path} is not a kexp run directory (it has no config.yaml)")
        for name in ("model.keras", "model.h5"):
            if (path / name).is_file():
                return Target(path / name, path, load_config(path / "config.yaml"))
        raise UserError(
            f"{path} has no saved model (model.keras or model.h5): the run did not complete. "
            "Its checkpoints/ may hold the last saved epoch"
        )
    if path.is_file():
        if path.suffix not in MODEL_SUFFIXES:
            raise UserError(f"{path} is not a model file (expected .keras or .h5)")
        run_dir = path.parent if (path.parent / "config.yaml").is_file() else None
        if run_dir is None and (path.parent.parent / "config.yaml").is_file():
            run_dir = path.parent.parent  # checkpoints/best.keras
        loaded = load_config(run_dir / "config.yaml") if run_dir else None
        return Target(path, run_dir, loaded)
    if path.is_symlink():
        raise UserError(f"{path} is a symbolic link to nothing (or a loop of links)")
    raise UserError(f"no such run directory or model file: {path}")


def load_model(path: Path, safe_mode: bool = True) -> Any:
    """``keras.models.load_model`` with Keras' safe mode on (no code runs from the file),
    and, for ``.h5``, the optimizer state Keras' HDF5 loader drops (:mod:`kexp.h5_optimizer`).

    ``safe_mode=False`` only for a run whose config says ``allow_unsafe_deserialization``.
    """
    import zipfile

    from kexp.hardware.precision import load_model as load_in_policy
    from kexp.safety import is_safe_mode_refusal, load_refusal
    from kexp.training.artifacts import quiet_absl

    why = _not_a_model(Path(path))
    if why is not None:
        raise UserError(f"{path} is not a readable Keras model: {why}")
    try:
        with quiet_absl():  # the .h5 loader warns about metrics it builds lazily
            # under the model's own dtype policy: a float16 model's loss-scale optimizer state
            # then loads, instead of being skipped with a warning (kexp.hardware.precision)
            model = load_in_policy(path, safe_mode=safe_mode)
        if Path(path).suffix == ".h5":  # Keras' .h5 loader drops the optimizer's slots
            from kexp.h5_optimizer import restore_optimizer_slots

            restore_optimizer_slots(model, path)
        return model
    except zipfile.BadZipFile as exc:  # a member of the archive is damaged
        raise UserError(f"{path} is not a readable Keras model: a damaged archive ({exc})"
                        ) from None
    except (OSError, ValueError, TypeError) as exc:
        if is_safe_mode_refusal(exc):
            raise UserError(load_refusal(path)) from None
        if "Could not locate" in str(exc) or "register_keras_serializable" in str(exc):
            raise UserError(_missing_component(path, exc)) from None
        raise UserError(f"cannot load the model {path}: {exc}") from None


def _not_a_model(path: Path) -> str | None:
    """Why ``path`` cannot hold a saved model, from its format's own structure, or None.

    Keras says "File not found" of a ``.keras`` file that is there but is no zip archive (a
    truncated copy, another file renamed), which sends the user looking for the wrong thing.
    """
    import zipfile

    if path.suffix == ".keras":
        if not zipfile.is_zipfile(path):
            return "it is not a .keras archive (a zip file); a truncated copy, or another kind of file?"
        try:
            with zipfile.ZipFile(path) as archive:
                archive.getinfo("config.json")
        except (KeyError, zipfile.BadZipFile, OSError):
            return "the archive has no config.json, which every saved Keras model has"
    elif path.suffix in (".h5", ".hdf5"):
        import h5py

        if not h5py.is_hdf5(str(path)):
            return "it is not an HDF5 file; a truncated copy, or another kind of file?"
    return None


def _missing_component(path: Path, exc: BaseException) -> str:
    """A custom component the model names is not registered: say which, and where it comes from."""
    import re

    found = re.search(r"Could not locate (class|function) '([^']+)'", str(exc))
    what = f"the custom {found.group(1)} '{found.group(2)}'" if found else "a custom component"
    return (
        f"cannot load the model {path}: it uses {what}, which no imported plugin registers. "
        "Use it through its run directory (kexp imports the plugins the run recorded), or "
        "import the plugin module before keras.models.load_model"
    )


def changed_data_files(manifest: Manifest | None) -> list[str]:
    """Data files or directories whose content differs from what the run read (or gone)."""
    from kexp.data.fingerprint import fingerprint

    if manifest is None:
        return []
    changed = []
    for file, digest in (manifest.data.get("data_files") or {}).items():
        try:
            if fingerprint(file) != digest:
                changed.append(f"{file} (content changed)")
        except OSError:
            changed.append(f"{file} (missing)")
    return changed
