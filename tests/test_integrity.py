"""Run integrity: a kill at any moment leaves only whole files under final names; a failed
run keeps its directory, marked, and touches no other run; concurrent runs never share a
directory; preflight catches what it can before any data or model; a NaN loss fails the run
with the last good checkpoint kept and named."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import signal
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from rich.console import Console

from _repro import history, hooked, iris, manifest, runs


def _cli(args: list[Any]) -> Any:
    from typer.testing import CliRunner

    from kexp.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_final_files_load(run_dir: Path) -> list[str]:
    """Every file under a final name (not a dot-file) reads back whole; returns their names."""
    from kexp.tf import keras

    import h5py

    checked = []
    for path in sorted(run_dir.rglob("*")):
        if path.is_dir() or any(part.startswith(".") for part in path.relative_to(run_dir).parts):
            continue
        name = path.name
        if name.endswith(".weights.h5"):
            with h5py.File(path, "r") as handle:
                handle.visit(lambda _: None)
        elif path.suffix in (".keras", ".h5"):
            keras.models.load_model(path, compile=False)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".yaml":
            yaml.safe_load(path.read_text())
        elif path.suffix == ".npz":
            with np.load(path) as npz:
                [npz[k] for k in npz.files]
        elif path.suffix == ".csv":
            rows = list(csv.reader(path.read_text().splitlines()))
            assert rows and all(len(r) == len(rows[0]) for r in rows), path
            assert path.read_text().endswith("\n"), path
        checked.append(str(path.relative_to(run_dir)))
    return checked


_BEFORE_TRAINING = {"config.yaml", "manifest.json"}
_AFTER_AN_EPOCH = _BEFORE_TRAINING | {"history.csv", "checkpoints/last.keras",
                                      "checkpoints/best.keras", "backup/state.json"}


@pytest.mark.slow
@pytest.mark.parametrize("hook, epochs, torn, whole, absent", [
    # the second write of checkpoints/last.keras (epoch 2): its bytes written, the archive
    # not yet closed; epoch 1's files (last.keras too) are all there
    ("kill_in:zip:2:last.", 2, "checkpoints/.last.*", _AFTER_AN_EPOCH, None),
    # the final model.h5 (after model.keras), inside h5py's close
    ("kill_in:h5:1:.model.", 1, ".model.*.tmp.h5", _AFTER_AN_EPOCH | {"model.keras"},
     "model.h5"),
    # the second training state (the end of training, after epoch 1's): epoch 1's stays
    ("kill_in:zip:2:.state-", 1, "backup/.state-*",
     _AFTER_AN_EPOCH | {"backup/state-000001.npz"}, "backup/state-000002.npz"),
    # splits.npz, before the first step and any state: the resume starts from the first
    # epoch and draws the same splits from the seed
    ("kill_in:zip:1:.splits.", 1, ".splits.*", _BEFORE_TRAINING, "splits.npz"),
])
def test_a_kill_while_saving_leaves_only_whole_files(tmp_path: Path, hook: str, epochs: int,
                                                     torn: str, whole: set[str],
                                                     absent: str | None) -> None:
    config = iris(tmp_path, train={"epochs": epochs},
                  output={"formats": ["keras", "h5"], "tensorboard": False})
    killed = hooked(hook, ["train", config])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (run_dir,) = runs(tmp_path / "runs")
    (temporary,) = run_dir.glob(torn)  # it really died inside that write
    if temporary.suffix in (".keras", ".npz"):
        assert not zipfile.is_zipfile(temporary)  # the archive was never finished
    assert absent is None or not (run_dir / absent).exists()  # only its temporary
    checked = assert_final_files_load(run_dir)
    assert whole <= set(checked), checked
    assert manifest(run_dir)["status"] == "running"  # a SIGKILL leaves no chance to write

    from kexp.training.run import train

    train(None, resume=run_dir, out=Console(file=io.StringIO()))  # and it resumes
    assert manifest(run_dir)["status"] == "completed"
    assert not list(run_dir.rglob(".*.tmp*"))  # the torn temporary was cleaned up
    checked = assert_final_files_load(run_dir)
    assert {"model.keras", "model.h5", "splits.npz", "backup/state.json"} <= set(checked)
    assert [r["epoch"] for r in history(run_dir)] == [str(e) for e in range(epochs)]


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    from kexp.training.artifacts import atomic_path, remove_stale_temporaries, write_text

    final = tmp_path / "manifest.json"
    write_text(final, '{"old": true}\n')
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text('{"new": ')
            raise RuntimeError("killed mid-write")
    assert final.read_text() == '{"old": true}\n'
    assert os.listdir(tmp_path) == ["manifest.json"]
    (tmp_path / ".manifest.abc.tmp.json").write_text("{")  # what a SIGKILL would leave
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [".manifest.abc.tmp.json"]


def test_a_declared_model_checkpoint_saves_atomically(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from kexp.tf import keras
    from kexp.training.model_checkpoint import AtomicModelCheckpoint, atomic_model_checkpoints

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    target = tmp_path / "checkpoints" / "model.keras"
    (callback,) = atomic_model_checkpoints([keras.callbacks.ModelCheckpoint(str(target))])
    assert isinstance(callback, AtomicModelCheckpoint) and callback.filepath == str(target)
    callback.set_model(model)
    callback.on_epoch_end(0, {"loss": 1.0})
    keras.models.load_model(target, compile=False)
    before = target.read_bytes()

    def dies_mid_write(path: str, **kwargs: object) -> None:
        Path(path).write_bytes(before[: len(before) // 2])
        raise RuntimeError("killed while saving")

    monkeypatch.setattr(model, "save", dies_mid_write)
    with pytest.raises(RuntimeError):
        callback.on_epoch_end(1, {"loss": 0.5})
    assert target.read_bytes() == before and os.listdir(target.parent) == ["model.keras"]


def _counting_saves(model: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    saved: list[str] = []
    save = model.save

    def counted(path: str, *args: Any, **kwargs: Any) -> None:
        saved.append(path)
        save(path, *args, **kwargs)

    monkeypatch.setattr(model, "save", counted)
    return saved


@pytest.mark.parametrize("save_last", [True, False])
def test_checkpoints_save_the_model_once_per_epoch(tmp_path: Path, save_last: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """best.keras in an epoch that also writes last.keras is a copy of its bytes (atomic),
    not a second Keras save of the same model."""
    from kexp.config.schema import CheckpointSection
    from kexp.tf import keras
    from kexp.training.callbacks import Checkpoints

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    section = CheckpointSection(monitor="loss", mode="min", save_last=save_last)
    callback = Checkpoints(tmp_path / "checkpoints", section, "loss")
    callback.set_model(model)
    saved = _counting_saves(model, monkeypatch)
    best, last = tmp_path / "checkpoints" / "best.keras", tmp_path / "checkpoints" / "last.keras"
    for epoch, loss, improved in [(0, 1.0, True), (1, 2.0, False), (2, 0.5, True)]:
        before = best.read_bytes() if best.exists() else None
        model.layers[0].kernel.assign(np.full((3, 2), loss, "float32"))  # tells epochs apart
        saved.clear()
        callback.on_epoch_end(epoch, {"loss": loss})
        assert len(saved) == (1 if save_last or improved else 0)  # one Keras save at most
        if improved and save_last:
            assert best.read_bytes() == last.read_bytes()
        elif not improved:
            assert best.read_bytes() == before
        weights = keras.models.load_model(best, compile=False).layers[0].kernel.numpy()
        assert weights[0, 0] == (loss if improved else 1.0)
    assert callback.best_epoch == 3 and last.exists() == save_last
    assert sorted(p.name for p in best.parent.iterdir()) == \
        (["best.keras", "last.keras"] if save_last else ["best.keras"])  # no temporaries


def test_keras_saves_after_the_first_reuse_its_attribute_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keras 3.15 caches, per kind of object, the attribute names its saver skips, under a
    key it never reads: each save built reference layers and optimizers again (a third of a
    small model's save). kexp stores them where Keras looks; the files are the same."""
    from keras.src.backend.common import global_state
    from keras.src.layers.layer import Layer
    from keras.src.saving import saving_lib

    from kexp.tf import keras
    from kexp.training.artifacts import save_model

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("adam", "mse", metrics=["mae"])
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    built: list[str] = []
    init = Layer.__init__

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(type(self).__name__)
        init(self, *args, **kwargs)

    save_model(model, tmp_path / "first.keras")
    stored = {k: v for k, v in vars(global_state.GLOBAL_STATE_TRACKER).items()
              if k.startswith("saving_attr_skiplist_")}
    assert {"saving_attr_skiplist_Sequential", "saving_attr_skiplist_Optimizer"} <= set(stored)
    monkeypatch.setattr(Layer, "__init__", counted)
    save_model(model, tmp_path / "second.keras")
    assert built == []  # nothing rebuilt: the saver found its lists
    for key, value in stored.items():  # and they are what Keras computes afresh
        kind = key.rsplit("_", 1)[1]
        monkeypatch.delattr(global_state.GLOBAL_STATE_TRACKER, key)
        monkeypatch.delattr(global_state.GLOBAL_STATE_TRACKER, f"saving_attr_skipset_{kind}")
        assert saving_lib.get_attr_skipset(kind) == value
    assert built  # (computing them afresh builds reference objects: the cost avoided)
    with zipfile.ZipFile(tmp_path / "first.keras") as a, \
            zipfile.ZipFile(tmp_path / "second.keras") as b:
        assert a.read("config.json") == b.read("config.json")
    first, second = (keras.models.load_model(tmp_path / f"{n}.keras") for n in ("first", "second"))
    for x, y in zip(first.variables + first.optimizer.variables,
                    second.variables + second.optimizer.variables):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_history_file_survives_torn_rows_and_repeated_epochs(tmp_path: Path) -> None:
    from kexp.training.history import HistoryFile, read_history, repair_csv

    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_loss\n0,0.5,0.6\n1,0.4,0.5\n2,0.3")  # a torn last row
    assert [r["epoch"] for r in read_history(path)] == [0, 1]
    assert repair_csv(path, before_epoch=1) == 1
    assert path.read_text() == "epoch,loss,val_loss\n0,0.5,0.6\n"

    writer = HistoryFile(path)
    writer.on_train_begin()
    writer.on_epoch_end(1, {"loss": 0.25, "val_loss": 0.35})
    writer.on_epoch_end(1, {"loss": 0.2, "val_loss": 0.3})  # the same epoch again: replaced
    assert path.read_text() == "epoch,loss,val_loss\n0,0.5,0.6\n1,0.2,0.3\n"


def _make_run_dir(root: str, barrier: Any, queue: Any) -> None:
    from kexp.training.rundir import new_run_dir

    barrier.wait()
    queue.put(str(new_run_dir(Path(root), "same-config")))


def test_runs_started_at_the_same_moment_get_different_directories(tmp_path: Path) -> None:
    # six processes create a run directory for the same config at the same instant
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(6), context.Queue()
    workers = [context.Process(target=_make_run_dir, args=(str(tmp_path), barrier, queue))
               for _ in range(6)]
    for worker in workers:
        worker.start()
    made = {queue.get(timeout=60) for _ in workers}
    for worker in workers:
        worker.join(timeout=60)
    assert len(made) == 6 and all(Path(p).is_dir() for p in made)


def test_a_taken_run_directory_name_is_never_reused(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import kexp.training.rundir as rundir

    first = rundir.new_run_dir(tmp_path, "exp")
    (first / "model.keras").write_text("an earlier run's file")
    tokens = iter([first.name.rsplit("-", 1)[1], "bbbbbb"])
    stamp = first.name.rsplit("-", 1)[0]
    monkeypatch.setattr(rundir.secrets, "token_hex", lambda n: next(tokens))

    class Frozen:
        @staticmethod
        def now(tz: Any = None) -> Any:
            class Moment:
                def strftime(self, fmt: str) -> str:
                    return stamp
            return Moment()

    monkeypatch.setattr(rundir._dt, "datetime", Frozen)
    second = rundir.new_run_dir(tmp_path, "exp")
    assert second.name == f"{stamp}-bbbbbb"
    assert (first / "model.keras").read_text() == "an earlier run's file"


def _inject_nan(monkeypatch: pytest.MonkeyPatch, epoch: int, step: int) -> None:
    """The model's weights become NaN at (epoch, step): its loss is NaN from that step."""
    import kexp.training.run as run_module
    from kexp.tf import keras
    from kexp.training.callbacks import build_callbacks

    class Poison(keras.callbacks.Callback):
        def on_epoch_begin(self, e: int, logs: Any = None) -> None:
            self.epoch = e + 1

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            if self.epoch == epoch and batch + 1 == step:
                # every kernel: a NaN only in the first one can be swallowed by a ReLU
                # (max(NaN, 0) is 0 on CPU), leaving the loss finite
                for weight in self.model.trainable_weights:
                    weight.assign(np.full(weight.shape, np.nan, dtype="float32"))

    def build(config: Any, run_dir: Any) -> Any:
        callbacks, checkpoints = build_callbacks(config, run_dir)
        return [Poison(), *callbacks], checkpoints

    monkeypatch.setattr(run_module, "build_callbacks", build)


def test_a_nan_loss_fails_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    earlier = tmp_path / "runs" / "iris-mlp" / "20200101-000000-000000"
    earlier.mkdir(parents=True)
    (earlier / "manifest.json").write_text('{"status": "completed"}')
    _inject_nan(monkeypatch, epoch=2, step=3)
    done = _cli(["train", iris(tmp_path)])
    assert done.exit_code == 1, done.output
    text = " ".join(done.output.split())
    assert "the loss became nan at epoch 2, step 3/6" in text
    run_dir = next(p for p in runs(tmp_path / "runs") if p != earlier)
    last = run_dir / "checkpoints" / "last.keras"
    assert f"the last good checkpoint is kept: {last}" in text
    failed = manifest(run_dir)
    assert failed["status"] == "failed" and failed["error"]["type"] == "LossNotFinite"
    assert failed["failure"]["epoch"] == 2 and failed["failure"]["step"] == 3
    assert failed["failure"]["last_good_checkpoint"] == str(last)
    from kexp.tf import keras

    assert all(np.isfinite(w).all() for w in keras.models.load_model(last).get_weights())
    assert [r["epoch"] for r in history(run_dir)] == ["0"]  # the diverged epoch is not logged
    state = json.loads((run_dir / "backup" / "state.json").read_text())
    assert (state["epochs"], state["step"]) == (1, 0)
    assert (earlier / "manifest.json").read_text() == '{"status": "completed"}'


def test_terminate_on_nan_can_be_turned_off(tmp_path: Path) -> None:
    from kexp.config import load_config
    from kexp.training.callbacks import build_callbacks
    from kexp.training.nan import NanGuard

    on = load_config(iris(tmp_path, "on.yaml")).config
    off = load_config(iris(tmp_path, "off.yaml", train={"epochs": 2, "terminate_on_nan": False})).config
    assert any(isinstance(c, NanGuard) for c in build_callbacks(on, tmp_path)[0])
    assert not any(isinstance(c, NanGuard) for c in build_callbacks(off, tmp_path)[0])


# --------------------------------------------------------------------------- preflight


def test_preflight_reports_missing_data_and_an_unwritable_root_before_anything(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = iris(tmp_path, output={"root": str(blocker / "runs")})
    data = yaml.safe_load(config.read_text())
    data["data"]["train"]["path"] = str(tmp_path / "missing.csv")
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    done = _cli(["train", config])
    assert done.exit_code == 2, done.output
    text = " ".join(done.output.split())
    assert "2 problems" in text
    assert f"data.train.path: no such file or folder: {tmp_path / 'missing.csv'}" in text
    assert "output.root: cannot write runs under" in text and "is a file" in text
    assert "Traceback" not in done.output


def test_missing_data_names_the_script_beside_it_that_makes_it(tmp_path: Path) -> None:
    """The digits PNG folders are derived, not in git: the newcomer got 'no such file or
    folder' with no word of configs/data/write_digits.py."""
    (tmp_path / "make_pngs.py").write_text('OUT = "derived_png"  # writes derived_png/train\n')
    (tmp_path / "other.py").write_text("print('unrelated')\n")
    config = iris(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["data"]["train"]["path"] = str(tmp_path / "derived_png" / "train")
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    done = _cli(["train", config])
    assert done.exit_code == 2, done.output
    text = "".join(done.output.split())
    script = tmp_path / "make_pngs.py"
    assert f"(madeby{script}:runpython{script})".replace(" ", "") in text, done.output
    assert "other.py" not in text


def test_an_empty_output_root_is_refused_not_taken_as_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: --output-root "" wrote the run into the working directory."""
    monkeypatch.chdir(tmp_path)
    done = _cli(["train", iris(tmp_path / "cfg"), "--output-root", ""])
    assert done.exit_code == 2 and "--output-root is empty" in done.output, done.output
    done = _cli(["validate", iris(tmp_path / "cfg"), "--set", 'output.root=" "'])
    assert done.exit_code == 2 and "output.root: is empty; write '.'" in done.output
    assert [p.name for p in tmp_path.iterdir()] == ["cfg"]


def test_preflight_checks_the_root_given_on_the_command_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = _cli(["train", iris(tmp_path), "--output-root", blocker / "x"])
    assert done.exit_code == 2 and "--output-root" in done.output and "is a file" in done.output


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_preflight_reports_a_bad_output_root_option_with_missing_data(tmp_path: Path) -> None:
    # every problem at once, the --output-root one included, in plain words
    config = iris(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["data"]["train"]["path"] = str(tmp_path / "missing.csv")
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    done = _cli(["train", config, "--output-root", "/proc/kexp"])
    assert done.exit_code == 2, done.output
    text = " ".join(done.output.split())
    assert "2 problems" in text and "Traceback" not in text
    assert f"data.train.path: no such file or folder: {tmp_path / 'missing.csv'}" in text
    assert ("output.root: --output-root /proc/kexp: cannot write runs there: /proc/kexp does "
            "not exist and cannot be created: no folder can be created in /proc (a special "
            "file system that does not hold new files)") in text


def test_preflight_says_plainly_why_a_folder_is_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import kexp.preflight as preflight

    def refuse(**kwargs: Any) -> Any:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(preflight.tempfile, "mkstemp", refuse)
    assert preflight._output_problem(tmp_path) == (
        f"{tmp_path} is not writable: no file can be created in it (a read-only file system)")
    assert preflight._output_problem(tmp_path / "runs" / "x") == (
        f"{tmp_path / 'runs' / 'x'} does not exist and cannot be created: no folder can be "
        f"created in {tmp_path} (a read-only file system)")


def test_preflight_checks_free_space_for_this_models_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kexp.preflight as preflight

    usage = preflight.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(preflight.shutil, "disk_usage",
                        lambda path: usage._replace(free=10 * preflight.MIB))
    done = _cli(["train", iris(tmp_path)])
    assert done.exit_code == 2 and "has only 10.0 MiB free" in " ".join(done.output.split())

    monkeypatch.setattr(preflight.shutil, "disk_usage",
                        lambda path: usage._replace(free=preflight.MIN_FREE + 1))
    done = _cli(["train", iris(tmp_path)])  # enough for the floor, not for this model
    assert done.exit_code == 2, done.output
    assert "not enough free space" in done.output and "parameters" in done.output
    assert not (tmp_path / "runs").exists()  # no run directory was made


def test_a_missing_gpu_is_reported_before_the_data_is_read(tmp_path: Path) -> None:
    broken = tmp_path / "broken.csv"
    broken.write_text("not,the,iris,columns\n1,2,3,4\n")  # reading it would be an error too
    config = iris(tmp_path, hardware={"accelerator": "gpu"})
    data = yaml.safe_load(config.read_text())
    data["data"]["train"]["path"] = str(broken)
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    done = _cli(["train", config])
    assert done.exit_code == 2, done.output
    assert "hardware.accelerator" in done.output and "gpu" in done.output.lower()
    assert "sepal_length" not in done.output  # the data was never read
    assert not (tmp_path / "runs").exists()
