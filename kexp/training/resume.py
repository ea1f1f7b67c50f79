"""``kexp resume RUN_DIR`` (= ``kexp train --resume RUN_DIR``): continue a run in place.

The run directory alone is enough: its ``config.yaml`` (resolved, seed filled in, data paths
absolute), ``splits.npz``, ``manifest.json`` and the training state in ``backup/``
(:mod:`kexp.training.state`). The resumed run trains in the same directory, continues
``history.csv``, and records each resume in the manifest (``resumes``). Training itself goes
through the same steps as ``kexp train`` (:func:`kexp.training.run.train`); this module
decides whether and how a run may be resumed (:func:`plan_resume`) and marks the start of the
resumed session (:meth:`ResumePlan.start`).

A config given with the resume is compared key by key with the saved one
(:mod:`kexp.config.diff`): a difference outside the keys safe to change is refused, each
with its key path and line; safe ones (``train.epochs``, a callback's ``patience``, ...) are
shown, applied, written into ``config.yaml`` and recorded with the resume.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kexp.config import LoadedConfig, load_config
from kexp.config.diff import Change, describe_safe, diff
from kexp.config.schema import ExperimentConfig, spec_parts
from kexp.config.yaml_io import dump
from kexp.errors import ConfigError, ConfigIssue, UserError
from kexp.manifest import FILENAME as MANIFEST, Manifest, now
from kexp.training.artifacts import write_text
from kexp.training.state import Position, Snapshot, load_snapshot

RESUMABLE = ("running", "interrupted", "failed", "completed")


def backup_dir_of(config: ExperimentConfig, run_dir: Path) -> Path:
    """Where the run's training state is: a declared ``BackupAndRestore``'s ``backup_dir``
    (relative to the run directory), else ``<run>/backup``."""
    for spec in config.callbacks:
        name, kwargs = spec_parts(spec)
        if name == "BackupAndRestore" and kwargs.get("backup_dir"):
            return Path(run_dir) / kwargs["backup_dir"]
    return Path(run_dir) / "backup"


@dataclass
class ResumePlan:
    """What a resume continues: the run, the config to use, and the state to start from."""

    run_dir: Path
    loaded: LoadedConfig
    manifest: Manifest
    snapshot: Snapshot | None
    saved_indices: dict[str, np.ndarray] | None
    changes: list[Change] = field(default_factory=list)

    @property
    def position(self) -> Position:
        return self.snapshot.position if self.snapshot else Position()

    def start(self, config: ExperimentConfig, say: Any) -> None:
        """Record the resume (config changes into ``config.yaml``) and say where it starts."""
        for change in self.changes:
            say.print(f"changed on resume: {change}", markup=False)
        if self.changes:
            write_text(self.run_dir / "config.yaml", dump(config.model_dump(mode="json")))
        data = self.manifest.data
        resumes = list(data.get("resumes") or [])
        resumes.append({
            "started_at": now(),
            "previous_status": data.get("status"),
            "from": {"epochs_completed": self.position.epochs, "step": self.position.step},
            "command": list(sys.argv),
            "config_changes": [
                {"key": c.key, "saved": c.saved, "given": c.given} for c in self.changes
            ],
        })
        self.manifest.update(status="running", ended_at=None, error=None, resumes=resumes,
                             interrupted_at=None, resume_command=None)
        if self.changes:
            from kexp.manifest import config_hash

            self.manifest.update(config=config.model_dump(mode="json"),
                                 config_hash=config_hash(config.model_dump(mode="json")))
        where = self.position.describe(self.snapshot.steps_per_epoch if self.snapshot else None)
        say.print(f"[bold]kexp[/bold] resuming {self.run_dir} from {where}")


def _run_dir(path: str | Path) -> Path:
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise UserError(f"no such run directory: {run_dir}")
    for name in ("config.yaml", MANIFEST):
        if not (run_dir / name).is_file():
            raise UserError(f"{run_dir} is not a kexp run directory (it has no {name})")
    return run_dir.resolve()


def _given(config: Any) -> LoadedConfig | None:
    if config is None or isinstance(config, LoadedConfig):
        return config
    return load_config(config)


def plan_resume(run_dir: str | Path, config: Any = None) -> ResumePlan:
    """Check that ``run_dir`` can be resumed (with ``config``, if given) and say how.

    ``config`` may be another file, or the run's own ``config.yaml`` loaded with ``--set``
    overrides (``kexp resume RUN --set train.epochs=20``).

    Raises UserError/ConfigError (exit 2) when it cannot: not a run directory, the data it
    trained on changed, an unsafe config difference, nothing left to train.
    """
    from kexp.runs import changed_data_files

    from kexp.preflight import check_run_dir

    run_dir = _run_dir(run_dir)
    check_run_dir(run_dir)
    manifest = Manifest.load(run_dir)
    status = manifest.data.get("status")
    if status not in RESUMABLE:
        raise UserError(f"{run_dir} has status {status!r}; it cannot be resumed")
    saved_file = run_dir / "config.yaml"
    saved = load_config(saved_file)
    given = _given(config)
    loaded, changes = _choose_config(saved, given)
    config_obj = loaded.config

    snapshot = load_snapshot(backup_dir_of(config_obj, run_dir))
    position = snapshot.position if snapshot else Position()
    epochs = config_obj.train.epochs
    if position.epochs > epochs or (position.epochs == epochs and position.step):
        raise ConfigError([_issue(loaded, ("train", "epochs"),
                                  f"the run has already trained {position.epochs} epoch(s); "
                                  f"give at least that many")])
    if status == "completed":
        done = int(manifest.data.get("epochs_completed") or position.epochs)
        saved_epochs = saved.config.train.epochs
        if done < saved_epochs:
            raise UserError(
                f"{run_dir} completed: a callback stopped it early, after epoch {done} of "
                f"{saved_epochs}; resuming would stop again at once"
            )
        if epochs <= done:
            raise UserError(
                f"{run_dir} already completed all {done} epochs; to train it longer, resume "
                f"with more: kexp resume {run_dir} --set train.epochs={done * 2}"
            )
        if snapshot is None:
            raise UserError(
                f"{run_dir} completed and its training state was deleted "
                "(BackupAndRestore delete_checkpoint): it cannot be continued"
            )
    changed = changed_data_files(manifest)
    if changed:
        raise UserError(
            f"the data {run_dir} trained on has changed since, so resuming would not continue "
            f"the same experiment: {'; '.join(changed)}. Start a new run instead"
        )
    indices_file = run_dir / "splits.npz"
    saved_indices = None
    if indices_file.is_file():
        with np.load(indices_file) as npz:
            saved_indices = {k: npz[k] for k in npz.files}
    return ResumePlan(run_dir, loaded, manifest, snapshot, saved_indices, changes)


def _issue(loaded: LoadedConfig, path: tuple, message: str) -> ConfigIssue:
    issue = ConfigIssue(tuple(path), message)
    try:
        return issue.located(*loaded.locate(issue.path))
    except Exception:
        return issue


def _choose_config(
    saved: LoadedConfig, given: LoadedConfig | None
) -> tuple[LoadedConfig, list[Change]]:
    """The config to continue with, and the (safe) changes it makes to the saved one."""
    if given is None:
        return saved, []
    seed = saved.config.seed
    config = given.config
    if config.seed is None:  # a config without a seed means "the run's seed" here
        config = config.model_copy(update={"seed": seed})
    changes = diff(saved.to_dict(), config.model_dump(mode="json"))
    unsafe = [c for c in changes if not c.safe]
    if unsafe:
        raise ConfigError(
            [_issue(given, c.path, f"differs from the run being resumed (saved: {c.saved!r}, "
                                   f"given: {c.given!r})") for c in unsafe],
            hint="a resume may change only " + describe_safe() + "; to change anything else, "
            "start a new run",
        )
    given.config = config
    return given, changes
