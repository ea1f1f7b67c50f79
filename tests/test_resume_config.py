"""What a resume accepts: the given config is compared with the run's saved one key by key;
keys safe to change are shown and applied, any other difference is refused (exit 2, each key
with its line); a run being trained, a changed data file or a non-run directory is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from _repro import iris
from kexp.training.lock import RunLock


def _cli(args: list[str]) -> Any:
    from typer.testing import CliRunner

    from kexp.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _run_dir(tmp_path: Path, status: str = "interrupted", **manifest: Any) -> Path:
    """A run directory as `kexp train` leaves it, before any training state was saved."""
    from kexp.config import load_config
    from kexp.config.yaml_io import dump

    run_dir = tmp_path / "runs" / "iris-mlp" / "20260101-000000-abcdef"
    run_dir.mkdir(parents=True)
    resolved = load_config(iris(tmp_path)).config.model_dump(mode="json")
    (run_dir / "config.yaml").write_text(dump(resolved))
    (run_dir / "manifest.json").write_text(json.dumps({"status": status, **manifest}))
    return run_dir


def _edited(tmp_path: Path, **changes: Any) -> Path:
    data = yaml.safe_load(iris(tmp_path, "base.yaml").read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    path = tmp_path / "given.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_unsafe_differences_are_refused_key_by_key(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    given = _edited(tmp_path, **{"data.batch_size": 32, "seed": 8, "train.epochs": 9})
    data = yaml.safe_load(given.read_text())
    data["compile"]["optimizer"] = {"Adam": {"learning_rate": 0.02}}
    given.write_text(yaml.safe_dump(data, sort_keys=False))
    done = _cli(["train", given, "--resume", run_dir])
    assert done.exit_code == 2, done.output
    text = done.output
    assert "Traceback" not in text
    assert "3 problems" in text
    assert f"{given}:{_line_of(given, 'batch_size')}: data.batch_size: differs from the run " \
           "being resumed (saved: 16, given: 32)" in " ".join(text.split())
    assert "compile.optimizer.Adam.learning_rate" in text and "saved: 0.01, given: 0.02" in text
    assert "seed" in text and "saved: 7, given: 8" in text
    assert "train.epochs" in text.split("a resume may change only")[1]  # the safe-key hint
    assert "train.epochs: differs" not in text  # safe: not a problem


def test_safe_differences_are_applied_and_a_missing_seed_is_the_runs(tmp_path: Path) -> None:
    from kexp.config import load_config
    from kexp.training.resume import plan_resume

    run_dir = _run_dir(tmp_path)
    given = _edited(tmp_path, **{"train.epochs": 9, "seed": None, "description": "longer"})
    data = yaml.safe_load(given.read_text())
    data["callbacks"][0]["EarlyStopping"]["patience"] = 3
    given.write_text(yaml.safe_dump(data, sort_keys=False))
    with plan_resume(run_dir, load_config(given)) as plan:
        assert sorted(c.key for c in plan.changes) == [
            "callbacks[0].EarlyStopping.patience", "description", "train.epochs"]
        assert plan.loaded.config.train.epochs == 9 and plan.loaded.config.seed == 7
        assert plan.snapshot is None  # nothing saved yet: it starts from the first epoch
        assert RunLock.is_held(run_dir)  # the plan holds the run until training ends
    assert not RunLock.is_held(run_dir)


def _recorded(tmp_path: Path, with_config: bool = True) -> Path:
    """A run whose manifest records its config (and its hash), as `kexp train` writes it."""
    from kexp.manifest import config_hash

    run_dir = _run_dir(tmp_path)
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    record = {"status": "interrupted", "config_hash": config_hash(resolved)}
    if with_config:
        record["config"] = resolved
    (run_dir / "manifest.json").write_text(json.dumps(record))
    return run_dir


def _edit_config_yaml(run_dir: Path, old: str, new: str) -> Path:
    path = run_dir / "config.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


def test_an_unsafe_edit_of_the_runs_config_yaml_is_refused(tmp_path: Path) -> None:
    """Was: a dropout rate edited in config.yaml trained silently on resume, with no
    config_changes recorded and the manifest's config_hash describing the old config."""
    run_dir = _recorded(tmp_path)
    path = _edit_config_yaml(run_dir, "rate: 0.2", "rate: 0.9")
    done = _cli(["resume", run_dir])
    assert done.exit_code == 2, done.output
    text = " ".join(done.output.split())
    assert (f"{path}:{_line_of(path, 'rate: 0.9')}: model.sequential.layers[1].Dropout.rate: "
            "edited in config.yaml after the run wrote it (the run trained with 0.2, the file "
            "now says 0.9)") in text
    assert "undo the edit" in text and "Traceback" not in text
    # a manifest from before the config was recorded: its hash still tells
    run_dir = _recorded(tmp_path / "old", with_config=False)
    _edit_config_yaml(run_dir, "rate: 0.2", "rate: 0.9")
    done = _cli(["resume", run_dir])
    assert done.exit_code == 2 and "no longer matches the manifest's config_hash" in done.output


def test_a_safe_edit_of_config_yaml_is_applied_and_recorded_as_a_change(tmp_path: Path) -> None:
    from kexp.config import load_config
    from kexp.training.resume import plan_resume

    run_dir = _recorded(tmp_path)
    _edit_config_yaml(run_dir, "epochs: 4", "epochs: 6")
    with plan_resume(run_dir) as plan:
        assert [(c.key, c.saved, c.given) for c in plan.changes] == [("train.epochs", 4, 6)]
        assert plan.loaded.config.train.epochs == 6
    # given on top with --set, the change is from the recorded value to the final one
    saved = load_config(run_dir / "config.yaml", ["train.epochs=8"])
    with plan_resume(run_dir, saved) as plan:
        assert [(c.key, c.saved, c.given) for c in plan.changes] == [("train.epochs", 4, 8)]


@pytest.mark.parametrize("change, saved, given", [
    ("+callbacks[]={EarlyStopping: {patience: 0}}",
     ["EarlyStopping", "ReduceLROnPlateau"],
     ["EarlyStopping", "ReduceLROnPlateau", "EarlyStopping"]),
    ("~callbacks[0]", ["EarlyStopping", "ReduceLROnPlateau"], ["ReduceLROnPlateau"]),
])
def test_adding_or_removing_a_callback_is_refused(tmp_path: Path, change: str, saved: list,
                                                   given: list) -> None:
    # a callback whose only arguments are safe keys (patience) is still a new callback
    run_dir = _run_dir(tmp_path)
    before = _files(run_dir)
    done = _cli(["resume", run_dir, "--set", change])
    assert done.exit_code == 2, done.output
    text = " ".join(done.output.split())
    assert "Traceback" not in text and "1 problem" in text
    assert (f"callbacks: a resume cannot add, remove or replace a callback (saved: {saved!r}, "
            f"given: {given!r})") in text
    assert _files(run_dir) == before


def test_diff_compares_callbacks_entry_by_entry_before_their_keys() -> None:
    from kexp.config.diff import diff

    saved = {"callbacks": [{"EarlyStopping": {"patience": 3}}, "TerminateOnNaN"]}
    replaced = {"callbacks": [{"ReduceLROnPlateau": {"patience": 3}}, "TerminateOnNaN"]}
    (change,) = diff(saved, replaced)
    assert (change.key, change.saved, change.given, change.safe) == (
        "callbacks[0]", "EarlyStopping", "ReduceLROnPlateau", False)
    added = {"callbacks": [*saved["callbacks"], {"EarlyStopping": {"patience": 0}}]}
    (change,) = diff(saved, added)
    assert change.key == "callbacks" and not change.safe
    assert change.given == ["EarlyStopping", "TerminateOnNaN", "EarlyStopping"]
    same = {"callbacks": [{"EarlyStopping": {"patience": 5}}, "TerminateOnNaN"]}
    (change,) = diff(saved, same)  # the same callbacks: their keys are compared
    assert change.key == "callbacks[0].EarlyStopping.patience" and change.safe


def _files(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run directory (lock file included) with its bytes."""
    return {str(p.relative_to(run_dir)): p.read_bytes()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_resume_is_refused_while_the_run_is_being_trained(tmp_path: Path) -> None:
    # refused before anything is read or written: not even a safe change reaches config.yaml
    # and the manifest gets no resume entry
    run_dir = _run_dir(tmp_path, status="running")
    with RunLock.acquire(run_dir):
        assert RunLock.is_held(run_dir)
        before = _files(run_dir)
        done = _cli(["resume", run_dir, "--set", "train.epochs=9"])
        assert _files(run_dir) == before
    assert done.exit_code == 2 and "is being trained right now" in done.output
    assert not RunLock.is_held(run_dir)


def test_resume_is_refused_when_the_data_changed(tmp_path: Path) -> None:
    from kexp.config import load_config

    config = load_config(iris(tmp_path)).config
    run_dir = _run_dir(tmp_path, data_files={config.data.train.path: "0" * 64})
    done = _cli(["resume", run_dir])
    assert done.exit_code == 2, done.output
    assert "has changed since" in done.output and "iris_train.csv" in done.output


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "nowhere", "no such run directory"),
    (lambda tmp: tmp, "is not a kexp run directory"),
])
def test_resume_needs_a_run_directory(tmp_path: Path, make: Any, message: str) -> None:
    done = _cli(["resume", make(tmp_path)])
    assert done.exit_code == 2 and message in done.output
    assert _cli(["train"]).exit_code == 2  # neither a config nor --resume


def test_diff_is_leaf_by_leaf_and_knows_the_safe_keys() -> None:
    from kexp.config.diff import diff, is_safe

    saved = {"train": {"epochs": 3, "steps_per_epoch": None}, "seed": 1,
             "callbacks": [{"EarlyStopping": {"patience": 2, "monitor": "val_loss"}}],
             "output": {"formats": ["keras"]}, "deterministic": True}
    given = {"train": {"epochs": 5, "steps_per_epoch": None}, "seed": 1.0,
             "callbacks": [{"EarlyStopping": {"patience": 4, "monitor": "loss",
                                              "verbose": 1}}],
             "output": {"formats": ["keras", "h5"]}, "deterministic": 1}
    changes = {c.key: c for c in diff(saved, given)}
    assert set(changes) == {"train.epochs", "callbacks[0].EarlyStopping.patience",
                            "callbacks[0].EarlyStopping.monitor",
                            "callbacks[0].EarlyStopping.verbose",
                            "output.formats[1]", "deterministic"}  # 1 == 1.0; True != 1
    assert {k for k, c in changes.items() if c.safe} == {
        "train.epochs", "callbacks[0].EarlyStopping.patience",
        "callbacks[0].EarlyStopping.verbose", "output.formats[1]"}
    assert changes["callbacks[0].EarlyStopping.verbose"].saved is None
    assert is_safe(("callbacks", 3, "ReduceLROnPlateau", "patience"))
    assert not is_safe(("callbacks", 3, "ReduceLROnPlateau", "factor"))
    assert not is_safe(("train",))


def test_a_mapping_removed_or_added_is_one_change_of_the_whole_value() -> None:
    """Was: '~train.class_weight' on a resume listed each class, then 'train.class_weight
    differs (saved: None, given: None)'."""
    from kexp.config.diff import diff

    weights = {"0": 1.0, "1": 2.0}
    for saved, given in ((weights, None), (None, weights), ([1, 2], "x")):
        (change,) = diff({"train": {"class_weight": saved, "epochs": 1}},
                         {"train": {"class_weight": given, "epochs": 1}})
        assert (change.key, change.saved, change.given) == ("train.class_weight", saved, given)
        assert not change.safe


_TWO_WORKERS = {"worker": ["localhost:12345", "localhost:12346"]}


@pytest.mark.parametrize("setup, reason", [
    # the manifest of a run trained by two workers (TF_CONFIG: the config says strategy auto)
    (lambda run_dir, monkeypatch: _set_manifest(run_dir, strategy={
        "name": "multi_worker_mirrored", "replicas": 2,
        "cluster": {"source": "tf_config", "cluster": _TWO_WORKERS,
                    "task": {"type": "worker", "index": 0}, "chief": True}}),
     "it was trained by 2 workers (multi_worker_mirrored)"),
    # killed before its manifest recorded the strategy: the config says it
    (lambda run_dir, monkeypatch: _set_config(run_dir, strategy="multi_worker_mirrored"),
     "its config says hardware.strategy: multi_worker_mirrored"),
    # a single-machine run, resumed where TF_CONFIG makes strategy auto a cluster
    (lambda run_dir, monkeypatch: monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": _TWO_WORKERS, "task": {"type": "worker", "index": 1}})),
     "TF_CONFIG (or the Slurm job step) in this environment describes a cluster"),
])
def test_a_multi_worker_run_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setup: Any, reason: str
) -> None:
    run_dir = _run_dir(tmp_path)
    setup(run_dir, monkeypatch)
    before = _files(run_dir)
    done = _cli(["resume", run_dir])
    assert done.exit_code == 2, done.output
    text = " ".join(done.output.split())
    assert "Traceback" not in text
    assert f"{run_dir} cannot be resumed: {reason}" in text
    assert "single-machine runs only" in text
    assert _files(run_dir) == before  # no lock file, no resume entry, nothing


def _set_manifest(run_dir: Path, **fields: Any) -> None:
    path = run_dir / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def _set_config(run_dir: Path, **hardware: Any) -> None:
    path = run_dir / "config.yaml"
    data = yaml.safe_load(path.read_text())
    data["hardware"] = {**data["hardware"], **hardware}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_run_early_stopping_ended_points_to_a_new_run(tmp_path: Path) -> None:
    """Was: 'resuming would stop again at once' and nothing more; the README's resume example
    met it on every shipped config's run (newcomer)."""
    run_dir = _run_dir(tmp_path, status="completed", epochs_completed=2)
    done = _cli(["resume", run_dir, "--set", "train.epochs=60"])
    assert done.exit_code == 2, done.output
    text = " ".join(done.output.split())
    assert "a callback stopped it early, after epoch 2 of 4" in text
    assert f"start a new run from its config: kexp train {run_dir / 'config.yaml'} --set" in text
