"""Resume: a run killed at any moment continues from its directory alone, in place, and ends
exactly where the uninterrupted run would have: same final weights bit for bit, every epoch
once in the history, each resume recorded in the manifest."""

from __future__ import annotations

import io
import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from _kexp_hooks import MARK
from _repro import (STEPS_PER_EPOCH, history, hooked, iris, manifest, popen_hooked, runs,
                    saved_config)


def _train(config: Any = None, **kwargs: Any):
    from kexp.training.run import train

    return train(config, out=Console(file=io.StringIO()), **kwargs)


def _cli(args: list[str]) -> Any:
    from typer.testing import CliRunner

    from kexp.cli import app

    return CliRunner().invoke(app, args)


def history_columns(run_dir: Path) -> dict[str, list[float]]:
    """The run's history.csv as ``{metric: [value per epoch]}`` (without the epoch column)."""
    rows = history(run_dir)
    return {k: [float(r[k]) for r in rows] for k in rows[0] if k != "epoch"}


def _state(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "backup" / "state.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run of the test experiment (4 epochs) every resume must equal."""
    return _train(iris(tmp_path_factory.mktemp("reference"))).directory


def _assert_same_run(run_dir: Path, reference: Path) -> None:
    done, expected = manifest(run_dir), manifest(reference)
    assert done["status"] == "completed" and done["epochs_completed"] == 4
    assert done["weights_sha256"] == expected["weights_sha256"]
    assert history(run_dir) == history(reference)  # every epoch once, the same values
    assert done["test_metrics"] == expected["test_metrics"]
    assert not list(run_dir.rglob(".*.tmp*"))


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path: Path, reference: Path) -> None:
    # step-level backups (every 2 steps); the process dies (SIGKILL, from inside, at an exact
    # step) at epoch 3, step 5 of 6: the last state is epoch 3, step 4
    callbacks = [
        {"EarlyStopping": {"monitor": "val_loss", "patience": 50, "restore_best_weights": True}},
        {"ReduceLROnPlateau": {"monitor": "val_loss", "factor": 0.5, "patience": 1}},
        {"BackupAndRestore": {"save_freq": 2}},
    ]
    config = iris(tmp_path, callbacks=callbacks)
    killed = hooked("kill_at:3:5", ["train", config])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (run_dir,) = runs(tmp_path / "runs")
    assert manifest(run_dir)["status"] == "running"  # a SIGKILL leaves no chance to write
    assert [row["epoch"] for row in history(run_dir)] == ["0", "1"]
    state = _state(run_dir)
    assert (state["epochs"], state["step"]) == (2, 4)

    resumed = _cli(["resume", str(run_dir)])  # the CLI app, in this process (TF is loaded)
    assert resumed.exit_code == 0, resumed.output
    assert "epoch 3, step 4" in resumed.output.replace("\n", " ")
    _assert_same_run(run_dir, reference)  # saving state every 2 steps changes no number
    (resume,) = manifest(run_dir)["resumes"]
    assert resume["previous_status"] == "running"
    assert resume["from"] == {"epochs_completed": 2, "step": 4}
    assert resume["config_changes"] == []


def test_sigterm_stops_after_the_step_and_the_run_resumes(tmp_path: Path, reference: Path) -> None:
    # each step ends with a marker line and a pause; SIGTERM during step 2 of epoch 2
    config = iris(tmp_path)
    process = popen_hooked("slow_steps:0.2", ["train", config])
    try:
        for line in process.stderr:
            if line.startswith(f"{MARK} 2 2"):
                process.send_signal(signal.SIGTERM)
                break
        stderr = process.stderr.read()
        assert process.wait(timeout=120) == 128 + signal.SIGTERM, stderr
    finally:
        process.kill()
    assert "interrupted:" in stderr and "SIGTERM at epoch 2, step 2/6" in stderr
    (run_dir,) = runs(tmp_path / "runs")
    assert f"Resume with: kexp resume {run_dir}" in stderr.replace("\n", "")
    stopped = manifest(run_dir)
    assert stopped["status"] == "interrupted"
    assert stopped["interrupted_at"] == {"epochs_completed": 1, "step": 2}
    # how far it got, from its history (was: 0 and {} however many epochs were done)
    assert stopped["epochs_completed"] == 1
    first = {k: v[0] for k, v in history_columns(reference).items()}
    assert stopped["final_metrics"] == pytest.approx(first, rel=1e-6)
    assert stopped["resume_command"] == f"kexp resume {run_dir}"
    assert (_state(run_dir)["epochs"], _state(run_dir)["step"]) == (1, 2)
    assert (run_dir / "checkpoints" / "last.keras").is_file()  # saved at the stop

    import kexp

    kexp.resume(run_dir, out=Console(file=io.StringIO()))  # the Python API of `kexp resume`
    _assert_same_run(run_dir, reference)
    assert manifest(run_dir)["resumes"][0]["previous_status"] == "interrupted"


class Crash(BaseException):
    """Ends a process's training abruptly (in-process stand-in for a kill)."""


def _crash_at(monkeypatch: pytest.MonkeyPatch, epoch: int, step: int) -> None:
    """Make the next training in this process crash at (epoch, step), both 1-based."""
    import kexp.training.callbacks as callbacks_module
    import kexp.training.run as run_module
    from kexp.tf import keras

    class CrashAt(keras.callbacks.Callback):
        def on_epoch_begin(self, e: int, logs: Any = None) -> None:
            self.epoch = e + 1

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if self.epoch == epoch and batch + 1 == step:
                raise Crash()

    original = callbacks_module.build_callbacks

    def build(config: Any, run_dir: Any) -> Any:
        callbacks, checkpoints = original(config, run_dir)
        return [*callbacks, CrashAt()], checkpoints

    monkeypatch.setattr(run_module, "build_callbacks", build)


def test_a_crashed_run_resumes_from_its_last_epoch(tmp_path: Path, reference: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = iris(tmp_path)
    _crash_at(monkeypatch, 2, 3)
    with pytest.raises(Crash):
        _train(config)
    monkeypatch.undo()
    (run_dir,) = runs(tmp_path / "runs")
    crashed = manifest(run_dir)
    assert crashed["status"] == "failed" and crashed["error"]["type"] == "Crash"
    assert crashed["epochs_completed"] == 1 and crashed["final_metrics"]["loss"] > 0
    assert (_state(run_dir)["epochs"], _state(run_dir)["step"]) == (1, 0)  # epoch-level state

    run = _train(None, resume=run_dir)
    assert run.directory == run_dir
    _assert_same_run(run_dir, reference)
    assert manifest(run_dir)["resumes"][0]["previous_status"] == "failed"


def test_resumes_across_training_stages_are_bit_identical(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # freeze.epochs 2 of 4: a stop at the stage boundary (the state holds stage 1's optimizer,
    # stage 2 starts a new one) and one in the middle of stage 2 (after its recompile)
    def config(folder: Path) -> Path:
        path = iris(folder, freeze={"layers": ["backbone"], "epochs": 2,
                                    "fine_tune_learning_rate": 0.003},
                    callbacks=[{"BackupAndRestore": {"save_freq": 2}}])
        data = yaml.safe_load(path.read_text())
        data["model"]["sequential"]["layers"][0]["Dense"]["name"] = "backbone"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    expected = _train(config(tmp_path / "reference")).directory
    _crash_at(monkeypatch, 3, 1)
    with pytest.raises(Crash):
        _train(config(tmp_path))
    (run_dir,) = runs(tmp_path / "runs")
    assert (_state(run_dir)["epochs"], _state(run_dir)["step"]) == (2, 0)
    _crash_at(monkeypatch, 3, 5)
    with pytest.raises(Crash):
        _train(None, resume=run_dir)
    assert (_state(run_dir)["epochs"], _state(run_dir)["step"]) == (2, 4)
    monkeypatch.undo()
    _train(None, resume=run_dir)
    assert manifest(run_dir)["weights_sha256"] == manifest(expected)["weights_sha256"]
    assert history(run_dir) == history(expected)
    assert [r["from"] for r in manifest(run_dir)["resumes"]] == [
        {"epochs_completed": 2, "step": 0}, {"epochs_completed": 2, "step": 4}]


def test_a_completed_run_continues_with_more_epochs(tmp_path: Path, reference: Path) -> None:
    # a copy of the completed reference run (a run directory is self-contained), resumed with
    # the safe change train.epochs given with --set on its own config: one more epoch
    run_dir = tmp_path / "copied-run"
    shutil.copytree(reference, run_dir)
    before = history(run_dir)
    done = _cli(["resume", str(run_dir), "--set", "train.epochs=5"])
    assert done.exit_code == 0, done.output
    assert "changed on resume: train.epochs: 4 -> 5" in done.output
    assert saved_config(run_dir)["train"]["epochs"] == 5
    resumed = manifest(run_dir)
    assert resumed["resumes"][0]["config_changes"] == [
        {"key": "train.epochs", "saved": 4, "given": 5}]
    assert resumed["epochs_completed"] == 5 and resumed["config"]["train"]["epochs"] == 5
    # the copy's manifest says where it is now, and where it was copied from
    assert resumed["run_dir"] == str(run_dir)
    assert resumed["resumes"][0]["moved_from"] == str(reference)
    after = history(run_dir)
    assert after[:4] == before and [r["epoch"] for r in after] == ["0", "1", "2", "3", "4"]
    assert history(reference) == before  # the original is untouched

    again = _cli(["resume", str(run_dir)])
    assert again.exit_code == 2 and "already completed all 5 epochs" in again.output


def test_a_resume_that_drops_a_format_sets_the_old_model_aside(tmp_path: Path,
                                                              reference: Path) -> None:
    """Was: model.h5 of epoch 4 left beside model.keras of epoch 5, unmarked (and a run
    writing only h5 would have left a stale model.keras, which evaluate reads first)."""
    run_dir = tmp_path / "copied-run"
    shutil.copytree(reference, run_dir)
    before = (run_dir / "model.keras").read_bytes()
    done = _cli(["resume", str(run_dir), "--set", "train.epochs=5",
                 "--set", "output.formats=[h5]"])
    assert done.exit_code == 0, done.output
    assert "model.keras is from before this resume" in done.output
    assert not (run_dir / "model.keras").exists() and (run_dir / "model.h5").is_file()
    assert (run_dir / "model.keras.stale").read_bytes() == before  # kept, not lost
    assert "model.keras.stale" in manifest(run_dir)["stale_models"]


def test_steps_per_epoch_is_a_stream_of_epochs(tmp_path: Path) -> None:
    """Unit check of the fit plan: a mid-epoch start gets its own one-epoch fit; stages never
    share a fit; nothing left still restores (an empty fit)."""
    from kexp.training.loop import Segment, plan
    from kexp.training.state import Position

    assert plan(Position(0, 0), 4) == [Segment(0, 4, 0, 0)]
    assert plan(Position(2, 4), 4) == [Segment(2, 3, 4, 0), Segment(3, 4, 0, 0)]
    assert plan(Position(1, 0), 5, [3]) == [Segment(1, 3, 0, 0), Segment(3, 5, 0, 1)]
    assert plan(Position(2, 1), 5, [3]) == [Segment(2, 3, 1, 0), Segment(3, 5, 0, 1)]
    assert plan(Position(4, 0), 4) == [Segment(4, 4, 0, 0)]
    assert STEPS_PER_EPOCH == 6


@pytest.mark.parametrize("damage", ["state.json", "state arrays", "splits.npz"])
def test_a_damaged_state_file_is_a_clear_refusal(tmp_path: Path, reference: Path,
                                                  damage: str) -> None:
    """Was: a JSONDecodeError, BadZipFile or pickle traceback, exit 1, on resume."""
    run_dir = tmp_path / "copied-run"
    shutil.copytree(reference, run_dir)
    if damage == "state.json":
        target = run_dir / "backup" / "state.json"
        target.write_text('{"epochs": 4, "st')  # cut short
    elif damage == "state arrays":
        target = run_dir / "backup" / _state(run_dir)["arrays"]
        target.write_bytes(target.read_bytes()[:200])  # a copy that stopped early
    else:
        target = run_dir / "splits.npz"
        target.write_bytes(b"not an npz file at all")
    before = target.read_bytes()
    done = _cli(["resume", str(run_dir), "--set", "train.epochs=5"])
    assert done.exit_code == 2, done.output
    assert "Traceback" not in done.output and done.exception is None or isinstance(
        done.exception, SystemExit), done.output
    assert "damaged" in done.output or "cannot be read" in done.output, done.output
    assert target.name in done.output.replace("\n", ""), done.output
    assert target.read_bytes() == before  # nothing the user has is touched
    assert history(run_dir) == history(reference)


def _signal_at_train_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next training in this process gets a SIGTERM as fit ends, after its last step."""
    import os

    import kexp.training.callbacks as callbacks_module
    import kexp.training.run as run_module
    from kexp.tf import keras

    class TermAtEnd(keras.callbacks.Callback):
        def on_train_end(self, logs: Any = None) -> None:
            os.kill(os.getpid(), signal.SIGTERM)

    original = callbacks_module.build_callbacks
    monkeypatch.setattr(run_module, "build_callbacks",
                        lambda config, run_dir: (lambda built: ([*built[0], TermAtEnd()],
                                                                built[1]))(
                            original(config, run_dir)))


def test_a_signal_as_training_ends_stops_the_run_and_resume_finishes_it(
        tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: the signal was taken ('finishing the current step, then saving the training
    state'), then dropped: the run went on through its final saves and exited 0."""
    config = iris(tmp_path)
    _signal_at_train_end(monkeypatch)
    done = _cli(["train", str(config)])
    monkeypatch.undo()
    assert done.exit_code == 128 + signal.SIGTERM, done.output
    (run_dir,) = runs(tmp_path / "runs")
    stopped = manifest(run_dir)
    assert stopped["status"] == "interrupted" and stopped["epochs_completed"] == 4
    assert "as training ended" in stopped["error"]["message"]
    again = _cli(["resume", str(run_dir)])
    assert again.exit_code == 0, again.output
    _assert_same_run(run_dir, reference)


def test_a_signal_after_the_run_completed_exits_0(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: status completed but exit 143, so a scheduler retried and got 'already
    completed' (exit 2)."""
    import os

    from kexp.manifest import Manifest

    finish = Manifest.finish

    def finish_then_signal(self: Manifest, status: str, *args: Any, **kwargs: Any) -> None:
        finish(self, status, *args, **kwargs)
        if status == "completed":
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Manifest, "finish", finish_then_signal)
    done = _cli(["train", str(iris(tmp_path, train={"epochs": 1}))])
    assert done.exit_code == 0, done.output
    (run_dir,) = runs(tmp_path / "runs")
    assert manifest(run_dir)["status"] == "completed"
