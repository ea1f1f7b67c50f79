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

    @property
    def config(self) -> Any:
        return self.loaded.config if self.loaded else None

    def manifest(self) -> Manifest | None:
        if self.run_dir and (self.run_dir / MANIFEST).is_file():
            return Manifest.load(self.run_dir)
        return None


def resolve_target(target: str | Path) -> Target:
    """A run directory (uses its ``model.keras``, else ``model.h5``) or a model file."""
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
    raise UserError(f"no such run directory or model file: {path}")


def load_model(path: Path) -> Any:
    """``keras.models.load_model`` with Keras' safe mode on (no code runs from the file)."""
    from kexp.tf import keras

    from kexp.training.artifacts import quiet_absl

    try:
        with quiet_absl():  # the .h5 loader warns about metrics it builds lazily
            return keras.models.load_model(str(path), safe_mode=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the model {path}: {exc}") from None


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
