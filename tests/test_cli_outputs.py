"""What `kexp predict` and `kexp evaluate` take and write, through the real CLI: labels
optional for predict, the data checked against the model before use (shape, outputs, label
range), multi-output labels as --y OUTPUT=KEY, outputs labelled by their own activation behind
data.preprocessing, hints in the command's own options, every user-named output file checked
before any work, unreadable models and config paths, and Ctrl-C once the command is done."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import CONFIGS, DATA, REPO, assert_user_error, cli, shipped, write_config


def _quiet() -> object:
    from rich.console import Console

    return Console(file=open(os.devnull, "w"))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write_rows(path: Path, rows: list[dict[str, str]], drop: tuple[str, ...] = ()) -> Path:
    fields = [k for k in rows[0] if k not in drop]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


TWO_HEADS = """
name: two-heads
seed: 1
data:
  train: {source: npz, path: iris.npz, x: x, y: {species: species, size: size}}
  preprocessing: {layers: [Normalization: {}]}
  batch_size: 16
model:
  functional:
    inputs: {features: {shape: [3]}}
    graph:
      - {name: h, layer: {Dense: {units: 8, activation: relu}}, inputs: features}
      - {name: species, layer: {Dense: {units: 3, activation: softmax}}, inputs: h}
      - {name: size, layer: {Dense: {units: 1}}, inputs: h}
    outputs: [size, species]           # not in the wrapper's (sorted) order of outputs
compile:
  optimizer: adam
  loss: {species: sparse_categorical_crossentropy, size: mse}
train: {epochs: 1}
callbacks: []
output: {formats: [keras], tensorboard: false}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three 1-epoch runs, trained in this process: iris (numeric label), penguins (a string
    label, preprocessing) and a two-output model (a softmax and a linear head) behind a
    Normalization."""
    from kexp.training.run import train

    tmp = tmp_path_factory.mktemp("outputs")
    one_epoch = {"train": {"epochs": 1}, "callbacks": [],
                 "output": {"root": str(tmp / "runs"), "formats": ["keras"],
                            "tensorboard": False}}
    found = {}
    for name in ("iris_mlp.yaml", "penguins_mlp.yaml"):
        config = write_config(tmp / name, shipped(name, **one_epoch))
        found[name.split("_")[0]] = train(config, out=_quiet()).directory
    table = _rows(DATA / "iris_train.csv")
    np.savez(tmp / "iris.npz",
             x=np.array([[float(r[c]) * 10 for c in ("sepal_length", "sepal_width",
                                                     "petal_width")] for r in table], "float32"),
             species=np.array([int(r["species_id"]) for r in table]),
             size=np.array([float(r["petal_length"]) for r in table], "float32"))
    config = yaml.safe_load(TWO_HEADS)
    config["output"]["root"] = str(tmp / "runs")
    found["two"] = train(write_config(tmp / "two.yaml", config), out=_quiet()).directory
    found["two_data"] = tmp / "iris.npz"
    return found


# ------------------------------------------------------------------- 1. labels optional


@pytest.mark.slow
def test_predict_needs_no_label_column(runs: dict[str, Path], tmp_path: Path) -> None:
    """New data has no labels: the penguins run (a string label) predicts on rows without
    its species column, exactly as on the same rows with it."""
    rows = _rows(DATA / "penguins_test.csv")
    unlabelled = _write_rows(tmp_path / "new.csv", rows, drop=("species",))
    without = cli(["predict", runs["penguins"], "--input", unlabelled])
    assert without.returncode == 0, without.stderr
    labelled = cli(["predict", runs["penguins"], "--input", DATA / "penguins_test.csv"])
    assert labelled.returncode == 0, labelled.stderr
    assert without.stdout == labelled.stdout
    header = without.stdout.splitlines()[0]
    assert header == "prob_Adelie,prob_Chinstrap,prob_Gentoo,predicted_label"
    assert len(without.stdout.splitlines()) == len(rows) + 1

    # evaluate does need them, and says which option names them
    done = cli(["evaluate", runs["penguins"], "--data", unlabelled])
    assert_user_error(done, "new.csv: --label: no column 'species'")


def test_a_headerless_file_to_predict_on_may_lack_the_label_columns(tmp_path: Path) -> None:
    from kexp.config.schema import DataSection
    from kexp.inputs import read_input

    spec = {"source": "csv", "path": str(tmp_path / "train.csv"), "header": False,
            "column_names": ["a", "kind", "b"], "label": "kind",
            "column_types": {"kind": "string"}}
    config = type("Run", (), {"data": DataSection.model_validate({"train": spec})})()
    (tmp_path / "new.csv").write_text("1,2\n3,4\n")
    read = read_input(tmp_path / "new.csv", config, labels=False)
    np.testing.assert_array_equal(read.x, [[1, 2], [3, 4]])
    (tmp_path / "old.csv").write_text("1,x,2\n3,y,4\n")  # with the label: left out
    np.testing.assert_array_equal(read_input(tmp_path / "old.csv", config, labels=False).x,
                                  [[1, 2], [3, 4]])


# ------------------------------------------------------------ 2. data checked against the model


@pytest.mark.slow
def test_evaluate_checks_the_label_range_like_training(runs: dict[str, Path],
                                                       tmp_path: Path) -> None:
    rows = _rows(DATA / "iris_test.csv")
    rows[5]["species_id"] = "7"
    bad = _write_rows(tmp_path / "bad.csv", rows)
    done = cli(["evaluate", runs["iris"], "--data", bad, "--label", "species_id"])
    assert_user_error(done, "bad.csv: labels range from 0 to 7, but the model has 3 classes",
                      "must be in [0, 3)", "--label")


@pytest.mark.slow
def test_predict_and_evaluate_say_the_same_of_features_that_do_not_fit(
        runs: dict[str, Path]) -> None:
    said = "digits_test.npz: features of shape (8, 8, 1) per example do not fit the model input (4,)"
    evaluated = cli(["evaluate", runs["iris"], "--data", DATA / "digits_test.npz",
                     "--x", "images", "--y", "labels"])
    assert_user_error(evaluated, said, "--x names the array")
    predicted = cli(["predict", runs["iris"], "--input", DATA / "digits_test.npz",
                     "--x", "images"])
    assert_user_error(predicted, said, "--x names the array")
    assert "[[" not in evaluated.stderr  # Keras prints the whole input: not repeated here


@pytest.mark.slow
def test_labels_of_a_two_output_model_are_given_per_output(runs: dict[str, Path]) -> None:
    run, data = runs["two"], runs["two_data"]
    one = cli(["evaluate", run, "--data", data, "--y", "species"])
    assert_user_error(one, "the model has 2 outputs ('size', 'species')",
                      "--y size=... --y species=...")
    typo = cli(["evaluate", run, "--data", data, "--y", "species=species", "--y", "sise=size"])
    assert_user_error(typo, "no output 'sise'", "did you mean 'size'")
    done = cli(["evaluate", run, "--data", data, "--y", "species=species", "--y", "size=size",
                "--json"])
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)["metrics"]
    assert {"species_loss", "size_loss"} <= set(metrics)

    # the same labels, one out of range, are refused per output
    with np.load(data) as saved:
        arrays = dict(saved)
    arrays["species"][3] = 7
    bad = data.with_name("bad.npz")
    np.savez(bad, **arrays)
    done = cli(["evaluate", run, "--data", bad, "--y", "species=species", "--y", "size=size"])
    assert_user_error(done, "labels of output 'species' range from 0 to 7")


# -------------------------------------------------- 5. outputs behind data.preprocessing


@pytest.mark.slow
def test_each_output_is_labelled_by_its_own_activation_behind_preprocessing(
        runs: dict[str, Path]) -> None:
    """The preprocessing wrapper names every output after the inner model; each head's columns
    still follow its own activation: softmax -> probabilities and a label, linear -> value."""
    from kexp.runs import load_model

    done = cli(["predict", runs["two"], "--input", runs["two_data"]])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split(",") == ["size_prediction", "species_prob_0", "species_prob_1",
                                   "species_prob_2", "species_predicted_label"]
    model = load_model(runs["two"] / "model.keras")
    with np.load(runs["two_data"]) as saved:
        expected = model.predict(saved["x"], verbose=0)
    first = [float(v) for v in lines[1].split(",")]
    assert first[0] == pytest.approx(float(expected["size"][0, 0]), rel=1e-5)
    assert first[1:4] == pytest.approx(expected["species"][0].tolist(), rel=1e-5)
    assert int(first[4]) == int(expected["species"][0].argmax())


# ------------------------------------------------------------- 6. hints in the command's terms


@pytest.mark.slow
def test_csv_hints_name_what_the_command_takes(runs: dict[str, Path], tmp_path: Path) -> None:
    rows = _rows(DATA / "penguins_test.csv")
    rows[0]["bill_length_mm"] = "long"
    done = cli(["predict", runs["penguins"], "--input", _write_rows(tmp_path / "p.csv", rows)])
    assert_user_error(done, "p.csv: line 2, column 'bill_length_mm' is not a number: 'long'",
                      "the run reads column 'bill_length_mm' as numbers")
    assert "input." not in done.stderr

    rows = _rows(DATA / "penguins_test.csv")
    rows[0]["island"] = "NA"
    done = cli(["predict", runs["penguins"], "--input", _write_rows(tmp_path / "q.csv", rows)])
    assert_user_error(done, "column 'island' is missing ('NA')",
                      "the run declares no fill for column 'island'")
    assert "input." not in done.stderr

    # a model file away from its run reads csv columns as numbers: iris_test.csv has a text
    # column, which --feature leaves out (evaluate takes --feature too)
    alone = tmp_path / "model.keras"
    shutil.copy(runs["iris"] / "model.keras", alone)
    done = cli(["predict", alone, "--input", DATA / "iris_test.csv"])
    assert_user_error(done, "column 'species' is not a number", "--feature COLUMN")
    assert "input." not in done.stderr
    features = [a for c in ("sepal_length", "sepal_width", "petal_length", "petal_width")
                for a in ("--feature", c)]
    done = cli(["evaluate", alone, "--data", DATA / "iris_test.csv", "--label", "species_id",
                *features, "--json"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["examples"] == 30


# ------------------------------------------------------------ 3. files kexp is asked to write

needs_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc")


@needs_proc
@pytest.mark.parametrize("args, said", [
    (["schema", "-o", "/proc/x.json"], "--output /proc/x.json: cannot write it"),
    (["init", "/proc/x.yaml"], "kexp init /proc/x.yaml: cannot write it"),
    (["evaluate", "RUN", "-o", "/proc/x.json"], "--output /proc/x.json: cannot write it"),
    (["predict", "RUN", "--input", "IN", "--output", "/proc/x.csv"],
     "--output /proc/x.csv: cannot write it"),
    (["validate", "CONFIG", "--plot", "/proc/x.png"], "--plot /proc/x.png: cannot write it"),
], ids=["schema", "init", "evaluate", "predict", "validate"])
def test_an_unwritable_output_is_refused_before_any_work(tmp_path: Path, args: list[str],
                                                         said: str) -> None:
    """Checked first: the run here does not even exist, the message is still about the file."""
    fill = {"RUN": tmp_path / "no-run", "IN": DATA / "iris_test.csv",
            "CONFIG": CONFIGS / "iris_mlp.yaml"}
    done = cli([fill.get(a, a) for a in args])
    assert_user_error(done, said, "/proc")


def test_a_folder_or_a_file_as_parent_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    done = cli(["predict", tmp_path / "no-run", "--input", DATA / "iris_test.csv",
                "--output", folder])
    assert_user_error(done, f"--output {folder}: cannot write it: it is a folder",
                      f"{folder / 'predictions.csv'}")
    assert_user_error(cli(["schema", "-o", folder]), "it is a folder")
    config = tmp_path / "kexp.yaml"
    config.write_text("mine: true\n")
    done = cli(["init", config / "x.yaml"])
    assert_user_error(done, f"{config} is a file, not a directory")
    assert config.read_text() == "mine: true\n"

    mine = tmp_path / "predictions.csv"  # nothing the user has is overwritten
    mine.write_text("mine\n")
    done = cli(["predict", tmp_path / "no-run", "--input", DATA / "iris_test.csv",
                "--output", mine])
    assert_user_error(done, "already exists", "or add --overwrite")
    assert mine.read_text() == "mine\n"


def test_predict_and_evaluate_replace_an_output_only_with_overwrite(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    predictions, scores = tmp_path / "p.csv", tmp_path / "e.json"
    predictions.write_text("old\n")
    scores.write_text("old\n")
    assert_user_error(cli(["evaluate", runs["iris"], "-o", scores]), "add --overwrite")
    done = cli(["predict", runs["iris"], "--input", DATA / "iris_test.csv", "-o", predictions,
                "--overwrite"])
    assert done.returncode == 0, done.stderr
    assert predictions.read_text().startswith("prob_0,")
    done = cli(["evaluate", runs["iris"], "-o", scores, "--overwrite"])
    assert done.returncode == 0, done.stderr
    assert json.loads(scores.read_text())["metrics"]["accuracy"] >= 0


def test_overwrite_never_replaces_the_input_or_the_runs_own_files(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """Was: --overwrite wrote predictions over the run's model.keras, its manifest, or the
    input file itself."""
    run = runs["iris"]
    data = tmp_path / "in.csv"
    data.write_bytes((DATA / "iris_test.csv").read_bytes())
    kept = {path: path.read_bytes() for path in (run / "model.keras", run / "manifest.json",
                                                 run / "history.csv", data)}
    for output, what in ((data, "the input being predicted"),
                         (run / "model.keras", "the final model of the run"),
                         (run / "history.csv", "the history of the run")):
        done = cli(["predict", run, "--input", data, "-o", output, "--overwrite"])
        assert_user_error(done, f"--output {output}: it is {what}", "even with --overwrite")
    done = cli(["evaluate", run, "-o", run / "manifest.json", "--overwrite"])
    assert_user_error(done, "it is the manifest of the run", "even with --overwrite")
    done = cli(["evaluate", run, "--data", data, "-o", data, "--overwrite"])
    assert_user_error(done, "it is the data being evaluated")
    assert all(path.read_bytes() == content for path, content in kept.items())
    # a file of the user's own in the run directory is theirs to replace
    mine = run / "my-predictions.csv"
    for _ in range(2):
        done = cli(["predict", run, "--input", data, "-o", mine, "--overwrite"])
        assert done.returncode == 0, done.stderr
    mine.unlink()


def test_an_output_suffix_that_names_no_format_is_refused(tmp_path: Path) -> None:
    """Was: '-o out.txt' wrote csv under a name that says text."""
    done = cli(["predict", tmp_path / "no-run", "--input", DATA / "iris_test.csv",
                "-o", tmp_path / "out.txt"])
    assert_user_error(done, f"--output {tmp_path / 'out.txt'}: the file name must end in .csv "
                      "or .npz")
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.parametrize("manifest, says", [
    ("{bad", "cannot read the run's manifest"),
    ("[1]", "the whole file (not a JSON object)"),
    ('{"data_files": ["x"]}', "'data_files' (not dict)"),
])
def test_a_damaged_manifest_is_a_clear_refusal(runs: dict[str, Path], tmp_path: Path,
                                               manifest: str, says: str) -> None:
    """Was: JSONDecodeError / AttributeError tracebacks from evaluate, predict, reproduce.
    (Every command reads the manifest with the same ``Manifest.load``: each is tried on the
    first damage, and evaluate on the others, to keep the suite's subprocesses few.)"""
    run = tmp_path / "run"
    shutil.copytree(runs["iris"], run)
    (run / "manifest.json").write_text(manifest)
    commands = (["evaluate", run], ["predict", run, "--input", DATA / "iris_test.csv"],
                ["reproduce", run], ["evaluate", run / "model.keras"])
    for args in commands if manifest == "{bad" else commands[:1]:
        assert_user_error(cli(args), says, "manifest.json")


def test_schema_output_is_written_atomically_and_regenerated(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "kexp.schema.json"  # the folder is made
    assert cli(["schema", "-o", target]).returncode == 0
    assert json.loads(target.read_text())["title"]
    assert cli(["schema", "-o", target]).returncode == 0  # kexp's own file: replaced
    assert [p.name for p in target.parent.iterdir()] == ["kexp.schema.json"]


# ------------------------------------------------------- 4. unreadable models and config paths


@pytest.mark.parametrize("name, content", [("model.keras", b"PK\x03\x04truncated"),
                                           ("model.h5", b"not a model\n")])
def test_a_corrupt_model_file_is_not_reported_as_missing(tmp_path: Path, name: str,
                                                         content: bytes) -> None:
    model = tmp_path / name
    model.write_bytes(content)
    done = cli(["predict", model, "--input", DATA / "iris_test.csv",
                "--feature", "sepal_length"])
    assert_user_error(done, f"{model} is not a readable Keras model")
    assert "not found" not in done.stderr.lower()


def test_evaluate_refuses_what_training_refuses_and_options_of_another_file_kind(
        runs: dict[str, Path], tmp_path: Path) -> None:
    """Was: a label 1.5 evaluated as class 1 (train refuses it), and --x/--y on a csv (or
    --feature on an npz) silently ignored."""
    rows = (DATA / "iris_test.csv").read_text().splitlines()
    rows[5] = rows[5].rsplit(",", 1)[0] + ",1.5"
    odd = tmp_path / "odd.csv"
    odd.write_text("\n".join(rows) + "\n")
    assert_user_error(cli(["evaluate", runs["iris"], "--data", odd]),
                      "odd.csv: label 1.5 of example 5 (counting from 1) is not a whole number")
    csv_file, npz_file = DATA / "iris_test.csv", DATA / "digits_test.npz"
    for args, said in (
            (["predict", runs["iris"], "--input", csv_file, "--x", "foo"],
             "--x names keys of an npz file, and iris_test.csv is not one; for a .csv file "
             "use --feature COLUMN"),
            (["evaluate", runs["iris"], "--data", csv_file, "--y", "foo"],
             "--y names keys of an npz file"),
            (["predict", runs["iris"], "--input", npz_file, "--feature", "a"],
             "--feature names columns of a csv file, and digits_test.npz is not one; for a "
             ".npz file use --x KEY")):
        assert_user_error(cli(args), said)


def test_a_keras_archive_whose_config_is_not_a_model(runs: dict[str, Path],
                                                     tmp_path: Path) -> None:
    """Was: an AttributeError traceback reading the archive's dtype policy."""
    import zipfile

    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(runs["iris"] / "model.keras") as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, b"[1, 2]" if item.filename == "config.json" else src.read(item))
    done = cli(["predict", bad, "--input", DATA / "iris_test.csv",
                *[a for c in ("sepal_length", "sepal_width", "petal_length", "petal_width")
                  for a in ("--feature", c)]])
    assert_user_error(done, f"cannot load the model {bad}")


def test_a_config_that_is_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    for command in ("train", "validate"):
        assert_user_error(cli([command, tmp_path / "a.yaml"]), "cannot read config file",
                          "Too many levels of symbolic links")
    assert_user_error(cli(["predict", tmp_path / "a.yaml", "--input", DATA / "iris_test.csv"]),
                      "a symbolic link to nothing (or a loop of links)")



def test_a_config_path_that_never_ends_or_is_huge_is_refused(tmp_path: Path) -> None:
    """Was: ``kexp validate /dev/zero`` read forever (and a data file given as the config
    was read whole into memory)."""
    big = tmp_path / "data.yaml"
    big.write_bytes(b"# " + b"x" * (10 * 2**20) + b"\n")
    for path in ("/dev/zero", big):
        assert_user_error(cli(["validate", path], timeout=60), f"config file {path} is over "
                          "10 MiB: a config is a few kilobytes of YAML")

# ------------------------------------------------------------------- 7. Ctrl-C once done

AFTER_THE_COMMAND = """
import os, signal, sys, time
from kexp.cli import main
sys.argv = ["kexp", *sys.argv[1:]]
try:
    main()
finally:  # the command has returned; the interpreter is about to exit
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)
"""


def test_ctrl_c_after_the_command_returned_changes_nothing(tmp_path: Path) -> None:
    """Python's handler is gone while the interpreter exits (TensorFlow's teardown takes a
    second): the signal is ignored then, and the command's own exit code stands."""
    done = subprocess.run([sys.executable, "-c", AFTER_THE_COMMAND, "schema", "-o",
                           str(tmp_path / "s.json")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and (tmp_path / "s.json").is_file()


@pytest.mark.slow
def test_ctrl_c_after_saved_leaves_a_completed_run_and_no_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path / "iris.yaml", shipped(
        "iris_mlp.yaml", train={"epochs": 1}, callbacks=[],
        output={"root": str(tmp_path / "runs"), "formats": ["keras"], "tensorboard": False}))
    process = subprocess.Popen([sys.executable, "-m", "kexp", "train", str(config)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    saved = ""
    for line in process.stdout:
        if line.startswith("saved:"):
            saved = line
            time.sleep(0.2)  # the teardown, where the bare signal killed the process
            process.send_signal(signal.SIGINT)
            break
    _, stderr = process.communicate(timeout=120)
    assert process.returncode in (0, 130), (process.returncode, stderr)  # never -SIGINT
    assert "Traceback" not in stderr
    (manifest,) = (tmp_path / "runs").glob("*/*/manifest.json")
    assert json.loads(manifest.read_text())["status"] == "completed"
    # the whole path on its one line, however long (was: folded at 80 columns into a pipe)
    assert len(saved) > 80 and saved.rstrip("\n") == f"saved: {manifest.parent}"


def test_keys_per_output_on_the_command_line() -> None:
    from kexp.errors import UserError
    from kexp.inputs import parse_keys

    assert parse_keys(None, "--y") is None and parse_keys(["labels"], "--y") == "labels"
    assert parse_keys(["digit=labels", "parity=odd"], "--y") == {"digit": "labels",
                                                                 "parity": "odd"}
    for wrong, said in ((["a", "b"], "--y is given 2 times"), (["a=x", "a=y"], "once"),
                        (["a=x", "=y"], "--y =y")):
        with pytest.raises(UserError, match=said):
            parse_keys(wrong, "--y")
