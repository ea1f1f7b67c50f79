"""Load a config file into a validated :class:`ExperimentConfig`, keeping the YAML lines.

    >>> loaded = load_config("configs/digits_cnn.yaml")      # doctest: +SKIP
    >>> loaded.config.train.epochs                            # doctest: +SKIP
    30

Data paths in a config are relative to the config file; :func:`load_config` makes them
absolute, so the resolved config saved into a run directory still points at the same files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kexp.config.schema import ExperimentConfig
from kexp.config.schema.data import SourceBase
from kexp.config.validation import issues_from
from kexp.config.yaml_io import SourceMap, load_file, load_text
from kexp.errors import ConfigError


@dataclass
class LoadedConfig:
    """A validated config plus where it came from (for error lines and relative paths)."""

    config: ExperimentConfig
    raw: dict[str, Any]
    where: SourceMap
    file: Path | None

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved config (defaults filled in, paths absolute) as plain data."""
        return self.config.model_dump(mode="json")

    def locate(self, path: tuple) -> tuple[str | None, int | None]:
        return self.where.locate(path)


def validate(raw: Any, where: SourceMap, file: Path | None) -> LoadedConfig:
    """Check plain data against the schema; every problem is reported in one ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError.single(
            (),
            "a config must be a YAML mapping (key: value lines), "
            f"not {type(raw).__name__ if raw is not None else 'an empty document'}",
            file=str(file) if file else None,
            line=where.line_of(()),
        )
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(issues_from(exc, raw, where, ExperimentConfig)) from None
    base = file.parent if file is not None else Path.cwd()
    return LoadedConfig(_absolute_paths(config, base), raw, where, file)


def load_config(path: str | Path) -> LoadedConfig:
    """Read, validate and resolve a config file."""
    path = Path(path)
    raw, where = load_file(path)
    return validate(raw, where, path.resolve())


def load_config_text(text: str, base_dir: Path | None = None) -> LoadedConfig:
    """Like :func:`load_config`, for a config held in a string (tests, notebooks)."""
    raw, where = load_text(text, "<string>")
    file = (base_dir / "<string>") if base_dir is not None else None
    return validate(raw, where, file)


def _absolute(base: Path, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _absolute(base, v) for k, v in value.items()}
    if value is None:
        return None
    return str((base / Path(value).expanduser()).resolve())


def _absolute_paths(config: ExperimentConfig, base: Path) -> ExperimentConfig:
    """A copy of ``config`` whose data file paths are absolute (relative to ``base``)."""
    updates: dict[str, Any] = {}
    for split in ("train", "validation", "test"):
        source = getattr(config.data, split)
        if isinstance(source, SourceBase):  # each source knows which of its fields are paths
            updates[split] = source.with_absolute_paths(base)
    return config.model_copy(update={"data": config.data.model_copy(update=updates)})
