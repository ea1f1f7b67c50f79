"""The run manifest: what produced a run, and how it ended.

``manifest.json`` is written when a run starts (status ``running``) and rewritten, atomically,
whenever its state changes, so it tells the truth even after a crash: ``completed``,
``failed`` (with the error) or ``interrupted``. It embeds the environment record of
:mod:`kexp.environment` plus the run's own facts: kexp version, command line, config hash,
seed, sha256 of every data file read, git state of the config's repository, times.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from kexp import __version__
from kexp.errors import UserError
from kexp.training.artifacts import write_json

FILENAME = "manifest.json"


def now() -> str:
    """UTC time, ISO-8601, second precision."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the resolved config in canonical JSON (key order does not matter)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_state(path: Path | None) -> dict[str, Any] | None:
    """Commit and dirty flag of the git repository holding ``path``, or None outside one."""
    if path is None:
        return None
    folder = path if path.is_dir() else path.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None:
        return None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    return {"repository": top, "commit": commit, "dirty": bool(status)}


#: Fields of a manifest that other commands walk, and the JSON type each must have.
_FIELD_TYPES: dict[str, type] = {"data": dict, "data_files": dict, "plugins": list,
                                 "resumes": list, "config": dict, "strategy": dict,
                                 "final_metrics": dict}


class Manifest:
    """The manifest of one run; every change is saved at once."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path
        self.data = data

    @classmethod
    def start(
        cls,
        run_dir: Path,
        *,
        config: dict[str, Any],
        config_file: Path | None,
        seed: int,
        environment: dict[str, Any],
    ) -> "Manifest":
        """A new run's manifest, status ``running``, saved."""
        manifest = cls.new(run_dir, config=config, config_file=config_file, seed=seed,
                           environment=environment)
        manifest.save()
        return manifest

    @classmethod
    def new(
        cls,
        run_dir: Path,
        *,
        config: dict[str, Any],
        config_file: Path | None,
        seed: int,
        environment: dict[str, Any],
    ) -> "Manifest":
        """A new run's manifest, status ``running``, not yet saved: the training session
        takes charge of its status (kexp.training.session) before it is written."""
        data = {
            "kexp_version": __version__,
            "run_dir": str(run_dir),
            "status": "running",
            "command": list(sys.argv),
            "config_file": str(config_file) if config_file else None,
            "config_hash": config_hash(config),
            # the resolved config as the run recorded it: a resume compares config.yaml with
            # it, so an edit by hand is refused or recorded, never silently trained with
            "config": config,
            "seed": seed,
            "started_at": now(),
            "ended_at": None,
            "git": git_state(config_file),
            "data_files": {},
            "splits": {},
            "strategy": None,
            "epochs_completed": 0,
            "final_metrics": {},
            "error": None,
            "environment": environment,
        }
        return cls(run_dir / FILENAME, data)

    @classmethod
    def load(cls, run_dir: Path) -> "Manifest":
        """The run's manifest; a ``UserError`` naming the file when it is not one kexp
        wrote (damaged, cut short, edited into another shape), rather than a traceback
        from whichever command read it first."""
        path = Path(run_dir) / FILENAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read the run's manifest {path}: {exc}") from None
        wrong = ([] if isinstance(data, dict) else ["the whole file (not a JSON object)"]) or [
            f"'{key}' (not {kind.__name__})" for key, kind in _FIELD_TYPES.items()
            if data.get(key) is not None and not isinstance(data[key], kind)]
        if wrong:
            raise UserError(f"{path} is damaged: {', '.join(wrong)}; it is not the manifest "
                            "kexp wrote, so the run cannot be read from it")
        return cls(path, data)

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def record_data_files(self, files: list[str]) -> None:
        """Fingerprint each data file or directory (kexp.data.fingerprint) the run read."""
        from kexp.data.fingerprint import fingerprint

        self.update(data_files={f: fingerprint(f) for f in files})

    def finish(self, status: str, error: BaseException | None = None, **fields: Any) -> None:
        """Record the final status (completed / failed / interrupted) and end time."""
        err = None
        if error is not None:
            err = {"type": type(error).__name__, "message": str(error)}
        self.update(status=status, ended_at=now(), error=err, **fields)

    def save(self) -> None:
        write_json(self.path, self.data)
