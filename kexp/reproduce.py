"""``kexp reproduce RUN_DIR``: rerun a run from its directory and check that it matches.

The saved ``config.yaml`` (resolved: seed filled in, data paths absolute) is trained again in
a new run directory next to the original. Then the two are compared, exactly:

* the sha256 of the final weights (``weights_sha256`` in each manifest,
  :mod:`kexp.training.weights`),
* the number of epochs, every final (last-epoch) training/validation metric and every test
  metric,
* the fingerprints of the data files read,

and the environment records of both manifests are diffed (:func:`kexp.environment.diff`):
versions, devices, packages, and the settings that change numerics with the same software
(``TF_ENABLE_ONEDNN_OPTS`` and other variables, thread pools, op determinism). With ``deterministic: true`` on the same machine and software
everything matches bit for bit; when something does not, the environment differences are
usually why. The result is printed as tables, written to ``reproduction.json`` in the new
run directory, and is the exit code: 0 on a match, 1 on a mismatch.

A multi-worker run is not reproduced (exit 2, before anything is written): the rerun would
need the same cluster (:func:`kexp.training.resume.refuse_multi_worker`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kexp.environment import DEFAULT_IGNORE, diff as environment_diff
from kexp.errors import UserError
from kexp.manifest import FILENAME as MANIFEST, Manifest
from kexp.training.artifacts import write_json

#: Environment keys that differ between any two runs and explain nothing.
VOLATILE = (*DEFAULT_IGNORE, "memory.available_bytes")


@dataclass(frozen=True)
class Row:
    """One compared quantity."""

    quantity: str
    original: Any
    rerun: Any

    @property
    def matches(self) -> bool:
        a, b = self.original, self.rerun
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return a == b


@dataclass
class Comparison:
    """The outcome of ``kexp reproduce``."""

    original: Path
    rerun: Path
    rows: list[Row]
    environment: list[tuple[str, Any, Any]] = field(default_factory=list)
    deterministic: bool = True

    @property
    def matched(self) -> bool:
        return all(row.matches for row in self.rows)

    @property
    def exit_code(self) -> int:
        return 0 if self.matched else 1

    def record(self) -> dict[str, Any]:
        return {
            "original": str(self.original),
            "rerun": str(self.rerun),
            "matched": self.matched,
            "deterministic": self.deterministic,
            "compared": [
                {"quantity": r.quantity, "original": r.original, "rerun": r.rerun,
                 "match": r.matches} for r in self.rows
            ],
            "environment_differences": [
                {"key": k, "original": a, "rerun": b} for k, a, b in self.environment
            ],
        }


def _original(run_dir: Path) -> Manifest:
    if not run_dir.is_dir() or not (run_dir / "config.yaml").is_file() or not (
        run_dir / MANIFEST
    ).is_file():
        raise UserError(f"{run_dir} is not a kexp run directory (config.yaml, {MANIFEST})")
    manifest = Manifest.load(run_dir)
    status = manifest.data.get("status")
    if status != "completed":
        if status == "failed":  # a resume meets the same error until its cause is fixed
            then = (f"see the error in its {MANIFEST}; once its cause is fixed, train the "
                    f"config again, or resume the run if it failed while training: "
                    f"kexp resume {run_dir}")
        else:
            then = f"resume it first: kexp resume {run_dir}"
        raise UserError(
            f"{run_dir} has status {status!r}: only a completed run has final results to "
            f"compare with ({then})"
        )
    return manifest


def _weights_hash(run_dir: Path, manifest: Manifest) -> str | None:
    recorded = manifest.data.get("weights_sha256")
    if recorded:
        return recorded
    model_file = run_dir / "model.keras"  # a run from before kexp recorded the hash
    if not model_file.is_file():
        return None
    from kexp.training.weights import file_weights_sha256

    return file_weights_sha256(model_file)


def compare(original_dir: Path, original: Manifest, rerun_dir: Path, rerun: Manifest) -> Comparison:
    """Compare two completed runs' manifests (see module doc)."""
    a, b = original.data, rerun.data
    rows = [
        Row("final weights (sha256)", _weights_hash(original_dir, original), b.get("weights_sha256")),
        Row("epochs", a.get("epochs_completed"), b.get("epochs_completed")),
    ]
    for section, label in (("final_metrics", "final"), ("test_metrics", "test")):
        first, second = a.get(section) or {}, b.get(section) or {}
        for key in list(first) + [k for k in second if k not in first]:
            rows.append(Row(f"{label} {key}", first.get(key), second.get(key)))
    rows.append(Row("data files (fingerprints)", a.get("data_files"), b.get("data_files")))
    env = environment_diff(a.get("environment") or {}, b.get("environment") or {},
                           ignore=VOLATILE)
    deterministic = bool((a.get("config") or {}).get("deterministic", True))
    return Comparison(original_dir, rerun_dir, rows, env, deterministic)


def render(comparison: Comparison, out: Console) -> None:
    """The comparison table, then the environment differences."""
    table = Table(title=f"reproduce {comparison.original.name} -> {comparison.rerun.name}")
    table.add_column("quantity")
    table.add_column("original", overflow="fold")
    table.add_column("rerun", overflow="fold")
    table.add_column("match")
    for row in comparison.rows:
        table.add_row(row.quantity, _show(row.original), _show(row.rerun),
                      "[green]yes[/green]" if row.matches else "[red]NO[/red]")
    out.print(table)
    if comparison.environment:
        env = Table(title="environment differences (original -> rerun)")
        env.add_column("key")
        env.add_column("original", overflow="fold")
        env.add_column("rerun", overflow="fold")
        for key, was, now in comparison.environment:
            env.add_row(key, _show(was), _show(now))
        out.print(env)
    else:
        out.print("environment: no differences (versions, devices, packages, settings that "
                  "change numerics)")
    if comparison.matched:
        out.print("[green]reproduced[/green]: bit-identical weights and equal metrics")
    else:
        note = "" if comparison.deterministic else (
            " (the config has deterministic: false, so bit-identical results are not "
            "expected)")
        out.print(f"[red]not reproduced[/red]: see the rows marked NO{note}")


def _show(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and len(value) == 64:  # a sha256: its start tells them apart
        return value[:16] + "…"
    if isinstance(value, dict):
        return f"{len(value)} file(s)" if value else "-"
    return "-" if value is None else str(value)


def reproduce(run_dir: str | Path, *, out: Console | None = None) -> Comparison:
    """Rerun ``run_dir``'s config next to it and compare (see module doc)."""
    from kexp.config import load_config
    from kexp.training.run import train

    say = out or Console()
    run_dir = Path(run_dir)
    original = _original(run_dir)
    run_dir = run_dir.resolve()
    loaded = load_config(run_dir / "config.yaml")
    from kexp.training.resume import refuse_multi_worker

    refuse_multi_worker(run_dir, loaded.config, original.data, "reproduced")
    rerun = train(loaded, output_root=run_dir.parent.parent, out=say)
    rerun_manifest = Manifest.load(rerun.directory)
    comparison = compare(run_dir, original, rerun.directory, rerun_manifest)
    write_json(rerun.directory / "reproduction.json", comparison.record())
    rerun_manifest.update(reproduction_of=str(run_dir), reproduced=comparison.matched)
    render(comparison, say)
    return comparison
