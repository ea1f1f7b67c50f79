"""Load a config file into a validated :class:`ExperimentConfig`, keeping the YAML lines.

    >>> loaded = load_config("configs/digits_cnn.yaml")      # doctest: +SKIP
    >>> loaded.config.train.epochs                            # doctest: +SKIP
    30

Data paths in a config are relative to the config file that wrote them (a base config's
paths to the base config; see :mod:`kexp.config.compose`); ``--set`` paths are relative to
the working directory. :func:`load_config` makes them absolute, so the resolved config saved
into a run directory still points at the same files.

The order: YAML (+ ``${env:...}``) per file, ``extends`` merged, ``--set`` overrides applied
(:mod:`kexp.config.overrides`), then the schema. Every step keeps the :class:`SourceMap`
current, so any error, including a Keras-level one found later (:meth:`LoadedConfig.locating`),
points at the file and line, or the ``--set``, to fix. A step's problems that leave the rest
meaningful (:mod:`kexp.config.problems`) do not stop the next steps: all are reported at once.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pydantic import ValidationError

from kexp.config.schema import ExperimentConfig
from kexp.config.schema.data import SourceBase
from kexp.config.schema.plugins import is_file_entry
from kexp.config.compose import compose_file, compose_text
from kexp.config.overrides import apply_overrides, is_override_origin
from kexp.config.problems import LoadProblems
from kexp.config.validation import issues_from
from kexp.config.yaml_io import SourceMap
from kexp.errors import ConfigError, ConfigIssue, KeyPath, relocating_warnings


@dataclass
class LoadedConfig:
    """A validated config plus where it came from (for error lines and relative paths)."""

    config: ExperimentConfig
    raw: dict[str, Any]
    where: SourceMap
    file: Path | None
    #: The ``--set`` overrides applied, in order (saved next to a run's config.yaml).
    overrides: tuple[str, ...] = ()
    #: The base configs merged in through ``extends`` (as named in messages).
    bases: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved config (defaults filled in, paths absolute) as plain data."""
        return self.config.model_dump(mode="json")

    def locate(self, path: tuple) -> tuple[str | None, int | None]:
        return self.where.locate(path)

    def locate_issues(self, issues: Sequence[ConfigIssue]) -> list[ConfigIssue]:
        """Issues found after loading (Keras names, shapes) given their file, line and value."""
        located = []
        for issue in issues:
            issue = issue.located(*self.where.locate(issue.path))
            changed = sorted({f for _, (f, _) in self.where.under(issue.path)
                              if is_override_origin(f) and f != issue.file})
            if changed:  # the file's line, but a --set inside it may be the cause
                issue = replace(issue, message=f"{issue.message} (changed by {', '.join(changed)})")
            if not issue.has_value:
                found, value = _value_at(self.raw, issue.path)
                if found and isinstance(value, (str, int, float, bool)) and (
                    str(value) not in issue.message
                ):
                    issue = replace(issue, value=value, has_value=True)
            located.append(issue)
        return located

    @contextmanager
    def locating(self) -> Iterator[None]:
        """Re-raise any ConfigError from the block with every issue located in the YAML.

        Keras-level checks (:mod:`kexp.resolve`, model building, data fit) know key paths
        only; this is the one place that turns them into ``file:line``. ConfigWarnings
        (a graph node no output uses) are re-issued located the same way.
        """
        with relocating_warnings(self.locate_issues):
            try:
                yield
            except ConfigError as exc:
                raise ConfigError(self.locate_issues(exc.issues), hint=exc.hint) from exc


def validate(raw: Any, where: SourceMap, file: Path | None,
             overrides: Sequence[str] = (), bases: Sequence[str] = (),
             problems: LoadProblems | None = None) -> LoadedConfig:
    """Check plain data against the schema; every problem is reported in one ConfigError.

    ``problems`` found while loading (an unset variable, a missing base, a bad ``--set``)
    are reported together with the schema's own findings, minus those they explain.
    """
    problems = problems if problems is not None else LoadProblems()
    if not isinstance(raw, dict):
        problems.raise_if_any([ConfigIssue(
            (),
            "a config must be a YAML mapping (key: value lines), "
            f"not {type(raw).__name__ if raw is not None else 'an empty document'}",
            file=str(file) if file else None,
            line=where.line_of(()),
        )])
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        found = issues_from(exc, raw, where, ExperimentConfig,
                            unread=problems.unread, incomplete=problems.incomplete)
        if not (found or problems):  # cannot happen (only problems leave errors out); be safe
            found = issues_from(exc, raw, where, ExperimentConfig)
        problems.raise_if_any(found)
    problems.raise_if_any()
    default = file.parent if file is not None else Path.cwd()
    config = _absolute_paths(config, _base_of(where, default))
    return LoadedConfig(config, raw, where, file, tuple(overrides), tuple(bases))


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> LoadedConfig:
    """Read a config file (with its ``extends``), apply ``--set`` overrides, validate.

    Every problem is reported at once: an unset variable, a base that cannot be merged or a
    bad override does not stop the schema check of the rest.
    """
    path = Path(path)
    problems = LoadProblems()
    raw, where, bases = compose_file(path, problems)
    raw = apply_overrides(raw, where, overrides, ExperimentConfig, problems)
    return validate(raw, where, path.resolve(), overrides, bases, problems)


def load_config_text(text: str, base_dir: Path | None = None,
                     overrides: Sequence[str] = ()) -> LoadedConfig:
    """Like :func:`load_config`, for a config held in a string (tests, notebooks)."""
    problems = LoadProblems()
    raw, where, bases = compose_text(text, base_dir, problems)
    raw = apply_overrides(raw, where, overrides, ExperimentConfig, problems)
    file = (base_dir / "<string>") if base_dir is not None else None
    return validate(raw, where, file, overrides, bases, problems)


def _value_at(raw: Any, path: KeyPath) -> tuple[bool, Any]:
    node = raw
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node):
            node = node[part]
        else:
            return False, None
    return True, node


def _base_of(where: SourceMap, default: Path) -> Callable[[KeyPath], Path]:
    """The directory relative paths at a key path are taken from.

    A path is relative to the file that wrote it; for a source mapping, to the file that
    wrote its ``path`` (or ``source``) key, so a base config's data stays next to the base
    config even when a child changes other keys of the same source. ``--set`` paths are
    relative to the working directory.
    """

    def base_of(path: KeyPath) -> Path:
        for probe in (path + ("path",), path + ("source",), path):
            if probe in where:
                file, _ = where.locate(probe)
                break
        else:
            file, _ = where.locate(path)
        if is_override_origin(file):
            return Path.cwd()
        if file is None or file.startswith("<"):
            return default
        return Path(file).resolve().parent

    return base_of


def _absolute(base: Path, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _absolute(base, v) for k, v in value.items()}
    if value is None:
        return None
    return str((base / Path(value).expanduser()).resolve())


def _absolute_paths(config: ExperimentConfig,
                    base_of: Callable[[KeyPath], Path]) -> ExperimentConfig:
    """A copy of ``config`` whose data file paths are absolute (``base_of`` each key path)."""
    updates: dict[str, Any] = {}
    for split in ("train", "validation", "test"):
        source = getattr(config.data, split)
        if isinstance(source, SourceBase):  # each source knows which of its fields are paths
            updates[split] = source.with_absolute_paths(base_of(("data", split)))
    plugins = [_absolute(base_of(("plugins", i)), p) if is_file_entry(p) else p
               for i, p in enumerate(config.plugins)]
    return config.model_copy(
        update={"data": config.data.model_copy(update=updates), "plugins": plugins}
    )
