"""The shipped image_dir and tfrecord configs on the digits written out by their script, and
data mistakes through the real CLI."""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, DATA, assert_user_error, cli, only_run, shipped, write_config


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/data/write_digits.py run into a fresh folder (PNG folders and TFRecords)."""
    out = tmp_path_factory.mktemp("digits")
    runpy.run_path(str(DATA / "write_digits.py"))["write_all"](out)
    return out


def example(name: str, data: Path, tmp_path: Path, **data_keys: object) -> Path:
    """A shipped config next to a copy of its data (paths stay as shipped), 1 epoch."""
    config = yaml.safe_load((CONFIGS / name).read_text())
    for split, changes in data_keys.items():
        config["data"][split].update(changes)
    config.update(train={"epochs": 1}, callbacks=[], output={"root": str(tmp_path / "runs")})
    config.pop("checkpoint", None)
    config["model"]["sequential"]["layers"] = [  # small: these tests are about the data
        {"Flatten": {}}, {"Dense": {"units": 10, "activation": "softmax"}}]
    shutil.copytree(data, tmp_path / "data", dirs_exist_ok=True)
    return write_config(tmp_path / name, config)


def test_image_dir_config_trains_predicts_class_names_and_tracks_the_folder(
    digits_files: Path, tmp_path: Path,
) -> None:
    config = example("digits_image_dir.yaml", digits_files, tmp_path)
    done = cli(["train", config])
    assert done.returncode == 0, done.stdout + done.stderr
    run = only_run(tmp_path / "runs")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["class_names"] == [str(d) for d in range(10)]
    assert set(manifest["data_files"]) == {str(tmp_path / "data" / "digits_png" / p)
                                           for p in ("train", "test")}
    assert manifest["splits"]["validation"] == {
        "examples": 216, "from": "fraction of train", "read": "tf.data stream"}
    assert manifest["data_pipeline"]["train"]["cache"] == "memory"

    image = sorted((tmp_path / "data" / "digits_png" / "test" / "7").iterdir())[0]
    done = cli(["predict", run, "--input", image])
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.strip().splitlines()[-2:]
    assert header.startswith("file,prob_0,") and row.startswith(f"{image},")
    assert row.rsplit(",", 1)[1] in {str(d) for d in range(10)}

    from rich.console import Console

    from kexp.evaluation import evaluate

    image.write_bytes(sorted(image.parent.iterdir())[1].read_bytes())
    said = Console(record=True, width=400, file=open("/dev/null", "w"))
    assert evaluate(run, out=said)["examples"] == 359
    assert (f"data changed since training: {tmp_path / 'data' / 'digits_png' / 'test'} "
            "(content changed)") in said.export_text()


def test_tfrecord_config_trains_on_the_written_records(digits_files: Path, tmp_path: Path) -> None:
    from rich.console import Console

    from kexp.training.run import train

    config = example("digits_tfrecord.yaml", digits_files, tmp_path,  # a glob, relative
                     train={"files": "data/digits_tfrecord/tr*.tfrecord.gz"})
    run = train(config, out=Console(file=open("/dev/null", "w")))
    manifest = json.loads((run.directory / "manifest.json").read_text())
    assert manifest["splits"]["train"]["examples"] == 1222
    assert len(manifest["data_files"]) == 2 and run.test_metrics["accuracy"] > 0.1


def test_data_mistakes_exit_2_with_key_path_and_line(tmp_path: Path) -> None:
    config = shipped("penguins_mlp.yaml", output={"root": str(tmp_path / "runs")})
    config["data"]["train"]["features"][1] = "bill_lenght_mm"
    file = write_config(tmp_path / "bad.yaml", config)
    line = next(i for i, text in enumerate(file.read_text().splitlines(), 1) if "bill_lenght_mm" in text)
    done = cli(["train", file])
    assert_user_error(done, "data.train.features[1]: no column 'bill_lenght_mm'",
                      "did you mean 'bill_length_mm'", f"bad.yaml:{line}")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_evaluate_reads_a_test_source_without_the_training_file(tmp_path: Path) -> None:
    from rich.console import Console

    from kexp.evaluation import evaluate
    from kexp.training.run import train

    shutil.copy(DATA / "penguins_train.csv", tmp_path / "train.csv")
    config = shipped("penguins_mlp.yaml", train={"epochs": 1}, callbacks=[],
                     output={"root": str(tmp_path / "runs"), "formats": ["keras"]})
    config["data"]["train"]["path"] = str(tmp_path / "train.csv")
    quiet = Console(file=open("/dev/null", "w"))
    run = train(write_config(tmp_path / "penguins.yaml", config), out=quiet)
    (tmp_path / "train.csv").rename(tmp_path / "elsewhere.csv")
    said = Console(record=True, width=400, file=open("/dev/null", "w"))
    result = evaluate(run.directory, out=said)
    assert result["examples"] == 69
    assert result["metrics"]["accuracy"] == pytest.approx(run.test_metrics["accuracy"])
    assert f"{tmp_path / 'train.csv'} (missing)" in said.export_text()  # still said


@pytest.mark.slow
def test_a_run_killed_while_writing_its_file_cache_resumes(tmp_path: Path) -> None:
    """SIGKILL in epoch 1 leaves the file cache's lockfile; `kexp resume` (here from the
    start: no state was saved yet) must not trip over it."""
    import numpy as np

    from _repro import hooked, iris, manifest, runs

    rows = np.random.default_rng(0).normal(size=(3000, 4))
    table = tmp_path / "train.csv"
    table.write_text("sepal_length,sepal_width,petal_length,petal_width,species_id\n" + "".join(
        ",".join(f"{v:.3f}" for v in row) + f",{i % 3}\n" for i, row in enumerate(rows)))
    config = iris(tmp_path, train={"epochs": 1})
    data = yaml.safe_load(config.read_text())
    data["data"]["train"].update(path=str(table), stream=True)
    data["data"].update(cache="file", shuffle_buffer=16)  # a full buffer would read it all
    write_config(config, data)
    killed = hooked("kill_at:1:3", ["train", config])
    assert killed.returncode == -9, killed.stdout + killed.stderr
    (run,) = runs(tmp_path / "runs")
    assert list((run / "cache").glob("train*.lockfile"))  # epoch 1 had not cached it all
    done = cli(["resume", run])
    assert done.returncode == 0, done.stdout + done.stderr
    assert manifest(run)["status"] == "completed"
    assert not list((run / "cache").glob("*.lockfile"))
