"""``kexp reproduce RUN_DIR``: reruns the saved config next to the run, compares weights hash
and every final metric in a table, lists environment differences; exit 0 on a match, 1 on a
mismatch."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from rich.console import Console

from _repro import iris, manifest, runs
from conftest import cli


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kexp.training.run import train

    tmp = tmp_path_factory.mktemp("reproduce")
    return train(iris(tmp, train={"epochs": 2}), out=Console(file=io.StringIO())).directory


def test_reproduce_matches_a_deterministic_run(original: Path) -> None:
    done = cli(["reproduce", original])
    assert done.returncode == 0, done.stderr
    table = " ".join(done.stdout.split())
    assert "final weights (sha256)" in table and "│ NO" not in done.stdout
    for row in ("epochs", "final loss", "final val_accuracy", "test accuracy", "test loss"):
        assert row in table
    assert "reproduced: bit-identical weights and equal metrics" in table
    rerun = next(p for p in runs(original.parent.parent) if p != original)
    assert rerun.parent == original.parent  # next to the original
    record = json.loads((rerun / "reproduction.json").read_text())
    assert record["matched"] is True and record["original"] == str(original)
    assert all(row["match"] for row in record["compared"])
    assert manifest(rerun)["reproduction_of"] == str(original)
    assert manifest(rerun)["weights_sha256"] == manifest(original)["weights_sha256"]


def test_reproduce_reports_a_mismatch_with_the_environment_difference(
    original: Path, tmp_path: Path
) -> None:
    # a run "from another machine": its recorded numpy version, a test metric and the
    # weights hash differ from what this machine computes
    import shutil

    from typer.testing import CliRunner

    from kexp.cli import app

    other = tmp_path / "runs" / original.parent.name / original.name
    shutil.copytree(original, other)
    data = manifest(other)
    data["environment"]["versions"]["numpy"] = "0.0.1"
    # a setting that changes CPU numerics without changing any version
    here = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    onednn = "1" if here == "0" else "0"
    data["environment"]["numerics"]["env"]["TF_ENABLE_ONEDNN_OPTS"] = onednn
    data["test_metrics"]["loss"] += 1e-6
    data["weights_sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(data))
    done = CliRunner().invoke(app, ["reproduce", str(other)])
    assert done.exit_code == 1, done.output
    text = " ".join(done.output.split())
    assert "not reproduced" in text
    assert "versions.numpy" in text and "0.0.1" in text
    assert "numerics.env.TF_ENABLE_ONEDNN_OPTS" in text
    rerun = next(p for p in runs(tmp_path / "runs") if p != other)
    record = json.loads((rerun / "reproduction.json").read_text())
    mismatched = {row["quantity"] for row in record["compared"] if not row["match"]}
    assert mismatched == {"final weights (sha256)", "test loss"}
    import numpy

    assert {"key": "versions.numpy", "original": "0.0.1", "rerun": numpy.__version__} in (
        record["environment_differences"])
    assert {"key": "numerics.env.TF_ENABLE_ONEDNN_OPTS", "original": onednn,
            "rerun": here} in record["environment_differences"]


def test_reproduce_needs_a_completed_run(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kexp.cli import app

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("name: x\n")
    (run_dir / "manifest.json").write_text('{"status": "interrupted"}')
    done = CliRunner().invoke(app, ["reproduce", str(run_dir)])
    assert done.exit_code == 2 and "only a completed run" in done.output
    assert f"kexp resume {run_dir}" in " ".join(done.output.split())
    # a failed run: its error first (was: 'resume it first', which meets the same error)
    (run_dir / "manifest.json").write_text('{"status": "failed"}')
    done = CliRunner().invoke(app, ["reproduce", str(run_dir)])
    assert done.exit_code == 2
    assert "see the error in its manifest.json; once its cause is fixed" in " ".join(
        done.output.split())


def test_reproduce_refuses_a_multi_worker_run(original: Path, tmp_path: Path) -> None:
    # a completed run "trained by two workers": refused before any rerun directory is made
    import shutil

    from typer.testing import CliRunner

    from kexp.cli import app

    other = tmp_path / "runs" / original.parent.name / original.name
    shutil.copytree(original, other)
    data = manifest(other)
    data["strategy"] = {"name": "multi_worker_mirrored", "replicas": 2, "cluster": {
        "source": "workers", "cluster": {"worker": ["a:1", "b:2"]},
        "task": {"type": "worker", "index": 0}, "chief": True}}
    (other / "manifest.json").write_text(json.dumps(data))
    done = CliRunner().invoke(app, ["reproduce", str(other)])
    assert done.exit_code == 2, done.output
    text = " ".join(done.output.split())
    assert f"{other} cannot be reproduced: it was trained by 2 workers" in text
    assert runs(tmp_path / "runs") == [other]
