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

The run's plugins must be the files it trained with (:func:`refuse_changed_plugins`): a
plugin whose sha256 differs from the manifest's record, or that is gone, is refused like an
unsafe config change, and the recorded hashes are never replaced.

The run's lock (:mod:`kexp.training.lock`) is taken before the saved state is read, and held
by the plan until the training session that continues the run ends: a second ``kexp resume``
of a run that is being trained is refused before it reads or writes anything in it.
A multi-worker run is refused too (:func:`refuse_multi_worker`): its workers would have to
restart together from the chief's state, which kexp does not do.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kexp.config import LoadedConfig, load_config
from kexp.config.diff import Change, describe_safe, diff
from kexp.config.overrides import with_resume_overrides
from kexp.config.schema import ExperimentConfig, spec_parts
from kexp.config.yaml_io import dump
from kexp.data.splits import read_indices
from kexp.errors import ConfigError, ConfigIssue, UserError
from kexp.manifest import FILENAME as MANIFEST, Manifest, config_hash, now
from kexp.training.artifacts import remove_stale_temporaries, write_text
from kexp.training.lock import RunLock
from kexp.training.state import Position, Snapshot, load_snapshot

#: ``incomplete``: trained to the end, but a model file could not be written; a resume with
#: nothing left to train writes the final files again (kexp.training.run).
RESUMABLE = ("running", "interrupted", "failed", "completed", "incomplete")


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
    #: The run's lock, held from the plan until the session that trains the run ends.
    lock: RunLock | None = None

    @property
    def position(self) -> Position:
        return self.snapshot.position if self.snapshot else Position()

    def release(self) -> None:
        """Let go of the run's lock (idempotent; the session that trains also releases it)."""
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> "ResumePlan":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def start(self, config: ExperimentConfig, say: Any) -> None:
        """Record the resume and say where it starts; call it inside the training session,
        which has been handed :attr:`manifest` (:meth:`kexp.training.session.Session.track`).

        ``config.yaml`` is written first (with the config changes), then the manifest
        (status ``running``, the resume, the config it now records): a kill between the two
        leaves a ``config.yaml`` that differs from the manifest's record in safe keys only,
        which a later resume applies and records again (:func:`_edits_by_hand`). Last, what
        a killed process left.
        """
        from kexp.environment import numerics
        from kexp.plugins import records_for

        # the plugins this process imported are those the run recorded (checked when
        # planned; again here, before the manifest's records are written over)
        refuse_changed_plugins(self.run_dir, self.manifest.data.get("plugins"),
                               [r.as_dict() for r in records_for(config.plugins)])
        for change in self.changes:
            say.print(f"changed on resume: {change}", markup=False)
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
            # this process's settings that change numerics (a resume may run elsewhere)
            "numerics": numerics(),
        })
        fields: dict[str, Any] = {"failure": None} if "failure" in data else {}
        if data.get("run_dir") != str(self.run_dir):  # a run copied or moved: say where it is
            resumes[-1]["moved_from"] = data.get("run_dir")
            fields["run_dir"] = str(self.run_dir)
        if self.changes:
            from kexp.manifest import config_hash

            resolved = config.model_dump(mode="json")
            fields.update(config=resolved, config_hash=config_hash(resolved))
        if self.changes:  # first: a kill before the manifest leaves safe edits it records
            write_text(self.run_dir / "config.yaml", dump(config.model_dump(mode="json")))
        self.manifest.update(status="running", ended_at=None, error=None, resumes=resumes,
                             interrupted_at=None, resume_command=None, **fields)
        self._clean(config)
        if self.loaded.overrides:  # appended to the run's record, marked with this resume
            record = self.run_dir / "overrides.yaml"
            old = record.read_text(encoding="utf-8") if record.is_file() else None
            write_text(record, with_resume_overrides(old, self.loaded.overrides, len(resumes),
                                                     resumes[-1]["started_at"]))
        where = self.position.describe(self.snapshot.steps_per_epoch if self.snapshot else None)
        say.print(f"[bold]kexp[/bold] resuming {self.run_dir} from {where}", soft_wrap=True)

    def _clean(self, config: ExperimentConfig) -> None:
        """Remove what a killed process left: temporaries of interrupted writes (never a
        final name) and the data cache (a file cache may hold a stale lock). Done on every
        resume, also of a run killed before its first saved state."""
        folders = (self.run_dir, self.run_dir / "checkpoints", backup_dir_of(config, self.run_dir))
        for folder in folders:
            if folder.is_dir():
                remove_stale_temporaries(folder)
        shutil.rmtree(self.run_dir / "cache", ignore_errors=True)


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

    The returned plan holds the run's lock: use it as a context manager (or call
    :meth:`ResumePlan.release`) around the training session.

    Raises UserError/ConfigError (exit 2) when it cannot: not a run directory, a multi-worker
    run, a run another process is training, the data it trained on changed, a plugin file
    changed or gone, an unsafe config difference, nothing left to train. Nothing in the run
    directory is written before that.
    """
    from kexp.preflight import check_run_dir

    run_dir = _run_dir(run_dir)
    check_run_dir(run_dir)
    saved_file = run_dir / "config.yaml"
    saved = load_config(saved_file)
    recorded = _read_manifest(run_dir)
    edits = _edits_by_hand(saved, recorded)  # config.yaml against the manifest's record
    refuse_multi_worker(run_dir, saved.config, recorded, "resumed")
    loaded, changes = _choose_config(saved, _given(config))  # only unsafe changes refused
    changes = _merged(edits, changes)
    # before the state is read and before anything is written: a run being trained by
    # another process stays untouched (the lock is released by the caller, or right here)
    lock = RunLock.acquire(run_dir)
    try:
        plan = _plan(run_dir, saved, loaded, changes)
    except BaseException:
        lock.release()
        raise
    plan.lock = lock
    return plan


def _read_manifest(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {run_dir / MANIFEST}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{run_dir / MANIFEST} is not a kexp manifest (not a JSON object)")
    return data


def refuse_multi_worker(run_dir: Path, config: ExperimentConfig, manifest: dict[str, Any],
                        doing: str) -> None:
    """Refuse (UserError, exit 2) to resume or reproduce a run trained by several workers,
    or one this environment would train with several (``TF_CONFIG``, a Slurm job step).

    Only the chief writes the run directory; a resume of a multi-worker run would need every
    worker to restart together from the chief's state, which kexp does not do (the other
    workers would write into the chief's directory, and the chief would fail half-way).
    ``doing`` is ``"resumed"`` or ``"reproduced"``.
    """
    from kexp.hardware.cluster import several_workers

    strategy = manifest.get("strategy") if isinstance(manifest.get("strategy"), dict) else {}
    cluster = strategy.get("cluster") if isinstance(strategy.get("cluster"), dict) else None
    again = (f"to train this experiment again on several workers, start a new run of "
             f"{run_dir / 'config.yaml'} on every worker")
    reason = None
    if strategy.get("name") == "multi_worker_mirrored" or cluster is not None:
        spec = (cluster or {}).get("cluster") or {}
        workers = sum(len(v) for k, v in spec.items() if k in ("chief", "worker")) or None
        reason = (f"it was trained by {workers} workers" if workers else
                  "it was trained by several workers") + " (multi_worker_mirrored)"
    elif config.hardware.strategy == "multi_worker_mirrored":
        reason = "its config says hardware.strategy: multi_worker_mirrored"
    elif config.hardware.strategy == "auto" and several_workers(config.hardware.cluster):
        if config.hardware.cluster.workers is not None:
            reason = "its config's hardware.cluster.workers make it a multi-worker run"
        else:  # a single-machine run, but this process is one task of a cluster
            reason = ("TF_CONFIG (or the Slurm job step) in this environment describes a "
                      "cluster of several workers, so it would run under "
                      "multi_worker_mirrored here")
            again = "unset TF_CONFIG (or run outside the Slurm job step) to do it on one machine"
    if reason is not None:
        raise UserError(
            f"{run_dir} cannot be {doing}: {reason}. kexp resumes and reproduces "
            f"single-machine runs only; {again}"
        )


def _plan(run_dir: Path, saved: LoadedConfig, loaded: LoadedConfig,
          changes: list[Change]) -> ResumePlan:
    """The checks of :func:`plan_resume` that read the run's state (under its lock)."""
    from kexp.runs import changed_data_files

    manifest = Manifest.load(run_dir)
    status = manifest.data.get("status")
    if status not in RESUMABLE:
        raise UserError(f"{run_dir} has status {status!r}; it cannot be resumed")
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
                f"{saved_epochs}; resuming would stop again at once. To train on with other "
                f"settings, start a new run from its config: kexp train "
                f"{run_dir / 'config.yaml'} --set KEY=VALUE"
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
    refuse_changed_plugins(run_dir, manifest.data.get("plugins"))
    saved_indices = read_indices(run_dir / "splits.npz")
    return ResumePlan(run_dir, loaded, manifest, snapshot, saved_indices, changes)


def refuse_changed_plugins(run_dir: Path, records: Any, imported: Any = None) -> None:
    """Refuse (UserError, exit 2) a resume whose plugin code differs from what the run used.

    A plugin is code the model trains with, like its config: an edited plugin file would
    train the remaining epochs with other code under the run's name, and its manifest (one
    sha256 per plugin) could then describe neither. ``records`` are the manifest's plugin
    records, compared with the files now; ``imported``, the records of the plugins this
    process imported for the resume (compared again, right before the run is written to).
    The recorded hashes are never replaced.
    """
    from kexp.plugins import state

    if not isinstance(records, list):
        return  # killed before the plugins were recorded: nothing to compare
    now = {r.get("entry"): r for r in imported or [] if isinstance(r, dict)}
    problems = []
    for record in records:
        if not isinstance(record, dict):
            continue
        file, recorded = record.get("path") or record.get("entry"), record.get("sha256") or ""
        if imported is None:
            what, digest = state(record)
        else:
            current = now.get(record.get("entry")) or {}
            digest = current.get("sha256")
            same = current.get("path") == record.get("path") and digest == recorded
            what = "same" if same or not recorded else "changed" if digest else "missing"
            if what == "changed" and current.get("path") != record.get("path"):
                problems.append(f"{record.get('entry')} is now {current.get('path')}, not the "
                                f"file the run used ({file}, sha256 {recorded[:12]})")
                continue
        if what == "changed":
            problems.append(f"{file} changed since the run used it (sha256 {recorded[:12]} "
                            f"recorded, {(digest or '')[:12]} now)")
        elif what == "missing":
            problems.append(f"{file} is missing (the run used sha256 {recorded[:12]})")
    if problems:
        raise UserError(
            f"{run_dir} cannot be resumed: the plugin code it trained with has changed, so the "
            f"resumed epochs would train other code under the run's name: "
            f"{'; '.join(problems)}. Restore the plugin file(s) as the run used them (the "
            "manifest records each sha256), or start a new run with the edited plugin "
            f"(kexp train CONFIG, or kexp train {run_dir / 'config.yaml'})"
        )


def _issue(loaded: LoadedConfig, path: tuple, message: str) -> ConfigIssue:
    issue = ConfigIssue(tuple(path), message)
    try:
        return issue.located(*loaded.locate(issue.path))
    except Exception:
        return issue


def _edits_by_hand(saved: LoadedConfig, manifest: dict[str, Any]) -> list[Change]:
    """How the run's ``config.yaml`` differs from the config its manifest recorded.

    ``config.yaml`` is what a resume reads, and nothing stops an editor: a dropout rate
    changed there would silently train another experiment under the run's name, and a
    ``kexp reproduce`` would run something else again. Differences in keys safe to change
    are returned, to be applied and recorded like ``--set`` changes (one is also what a kill
    between writing ``config.yaml`` and the manifest on a resume leaves); any other is
    refused. A manifest from before kexp recorded the config has only its hash to compare.
    """
    current = saved.to_dict()
    record = manifest.get("config")
    if not isinstance(record, dict):
        digest = manifest.get("config_hash")
        if digest and config_hash(current) != digest:
            raise UserError(
                f"{saved.file} was edited after the run wrote it (it no longer matches the "
                "manifest's config_hash), and this run's manifest does not record its config "
                "to tell what changed; restore the file, and give the keys safe to change "
                "with --set")
        return []
    edits = diff(record, current)
    unsafe = [c for c in edits if not c.safe]
    if unsafe:
        raise ConfigError(
            [_issue(saved, c.path, f"edited in config.yaml after the run wrote it (the run "
                    f"trained with {c.saved!r}, the file now says {c.given!r})")
             for c in unsafe],
            hint="a resume continues the experiment the run recorded (manifest.json, "
            "'config'): undo the edit; only " + describe_safe() + " may change, best with "
            "--set; to change anything else, start a new run",
        )
    return edits


def _merged(edits: list[Change], changes: list[Change]) -> list[Change]:
    """The edits made in config.yaml, then the given config's changes on top of them, each
    key once, from the recorded value to the one trained with."""
    given = {c.path: c for c in changes}
    out = []
    for edit in edits:
        later = given.pop(edit.path, None)
        final = later.given if later is not None else edit.given
        if final != edit.saved:
            out.append(Change(edit.path, edit.saved, final))
    return out + [c for c in changes if c.path in given]


def _refusal(change: Change) -> str:
    if change.entries:
        return (f"a resume cannot add, remove or replace a callback (saved: {change.saved!r}, "
                f"given: {change.given!r})")
    return (f"differs from the run being resumed (saved: {change.saved!r}, "
            f"given: {change.given!r})")


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
            [_issue(given, c.path, _refusal(c)) for c in unsafe],
            hint="a resume may change only " + describe_safe() + "; to change anything else, "
            "start a new run",
        )
    given.config = config
    return given, changes
