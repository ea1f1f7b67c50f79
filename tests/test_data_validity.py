"""Data that reads but would train a wrong model, refused when it is read: NaN and infinity,
classes the training data never had, text in an encoding it is not read with, string labels,
loaders that exit or fail, duplicate columns, paths that are folders or link loops, and a
resume that would read a TFRecord glob's new files."""

from __future__ import annotations

import codecs
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from conftest import CONFIGS, DATA, assert_user_error, cli, only_run, shipped, write_config
from kexp.config.schema import DataSection
from kexp.data.arrays import Arrays
from kexp.data.sources import SourceContext, load_source
from kexp.errors import ConfigError

AT = ("data", "train")
IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
AFTER_TRAINING = dict(after_training=True)


def read(spec: dict[str, Any], context: SourceContext | None = None) -> Any:
    """Validate ``spec`` as data.train and read it."""
    return load_source(DataSection.model_validate({"train": spec}).train, AT, context)


def error_of(spec: dict[str, Any], context: SourceContext | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        read(spec, context)
    return str(caught.value)


def csv_spec(path: Path, **extra: Any) -> dict[str, Any]:
    return {"source": "csv", "path": str(path), **extra}


# --- NaN and infinity ------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("cell", ["nan", "NaN", "inf", "-Infinity", "1e400"])
def test_a_csv_cell_that_is_not_a_finite_number_is_missing(
        tmp_path: Path, cell: str, stream: bool) -> None:
    table = tmp_path / "t.csv"
    table.write_text(f"a,b,label\n1,2,0\n{cell},3,1\n4,5,0\n")
    spec = csv_spec(table, label="label", stream=stream)
    message = error_of(spec)
    assert (f"data.train: t.csv line 3, column 'a' is missing ({cell!r}: not a finite "
            "number); declare a value for it in data.train.fill.a") in message
    x, _ = read({**spec, "fill": {"a": -1}}).head(10)  # the declared fill, in both readings
    np.testing.assert_array_equal(x, [[1, 2], [-1, 3], [4, 5]])


def test_a_csv_number_beyond_float32_and_a_nan_fill_are_refused(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("a,label\n1e39,0\n2,1\n")
    assert "t.csv line 2, column 'a' is '1e39', beyond the range of float32" in error_of(
        csv_spec(table, label="label"))
    assert read(csv_spec(table, label="label", dtype="float64")).x[0, 0] == 1e39
    table.write_text("a,label\nnan,0\n2,1\n")
    assert "data.train.fill.a: must be a finite number" in error_of(  # a string passes the schema
        csv_spec(table, label="label", fill={"a": "nan"}))


def test_nan_in_npz_npy_and_python_arrays_names_key_count_and_first_index(tmp_path: Path) -> None:
    x = np.ones((10, 3), np.float32)
    x[4, 2] = np.nan
    x[7, 0] = np.inf
    y = np.arange(10) % 2
    np.savez(tmp_path / "d.npz", images=x, labels=y)
    message = error_of({"source": "npz", "path": str(tmp_path / "d.npz"), "x": "images",
                        "y": "labels"})
    assert ("data.train.x: features: 2 NaN or infinite value(s), the first in example 4 "
            "(at index [4, 2])") in message
    np.savez(tmp_path / "named.npz", a=np.ones((10, 3)), b=x, labels=y)
    assert "data.train.x.right: features 'right': 2 NaN" in error_of(
        {"source": "npz", "path": str(tmp_path / "named.npz"), "x": {"left": "a", "right": "b"},
         "y": "labels"})
    np.save(tmp_path / "x.npy", np.ones((10, 3)))
    np.save(tmp_path / "y.npy", np.where(y == 1, np.nan, 0.5))
    assert "data.train.y: labels: 5 NaN or infinite value(s), the first in example 1" in error_of(
        {"source": "npy", "x": str(tmp_path / "x.npy"), "y": str(tmp_path / "y.npy")})
    module = tmp_path / "make.py"
    module.write_text("import numpy as np\n"
                      "def load():\n    x = np.zeros((5, 2)); x[3, 1] = np.nan\n"
                      "    return x, np.zeros(5)\n")
    assert "data.train.function: features: 1 NaN or infinite value(s), the first in example 3" \
        in error_of({"source": "python", "function": f"{module}:load"})


def test_nan_check_reads_a_memory_map_in_blocks(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import kexp.data.arrays as arrays

    monkeypatch.setattr(arrays, "BLOCK_BYTES", 64)  # 5 rows of 3 float32 per block
    x = np.zeros((100, 3), np.float32)
    x[[62, 63, 98], [1, 0, 2]] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(100))
    message = error_of({"source": "npz", "path": str(tmp_path / "d.npz")})
    assert "3 NaN or infinite value(s), the first in example 62 (at index [62, 1])" in message


def write_float_records(file: Path, values: np.ndarray) -> None:
    from kexp.tf import tf

    with tf.io.TFRecordWriter(str(file)) as writer:
        for row in values:
            feature = {"f": tf.train.Feature(float_list=tf.train.FloatList(value=row)),
                       "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[0]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature))
                         .SerializeToString())


def test_a_stream_with_nan_fails_when_read_naming_the_split(tmp_path: Path) -> None:
    from kexp.data.pipeline import make_dataset
    from kexp.tf import tf

    values = np.ones((30, 2), np.float32)
    values[3, 1] = np.nan
    write_float_records(tmp_path / "a.tfrecord", values)
    spec = {"source": "tfrecord", "files": str(tmp_path / "a.tfrecord"), "x": "f", "y": "label",
            "features": {"f": {"shape": [2]}, "label": {"dtype": "int64"}}}
    assert ("data.train.files: features: 1 NaN or infinite value(s), the first in example 3 "
            "(at index [3, 1])") in error_of(spec)  # the first examples, read with the source
    values[3, 1], values[24, 0] = 1.0, np.inf  # past them: found as tf.data reads it
    write_float_records(tmp_path / "a.tfrecord", values)
    stream = read(spec)
    split = stream.take(np.arange(20, 30))  # a split: its examples 0.. are the source's 20..
    assert "NaN or infinite value(s), the first in example 24" in str(
        pytest.raises(ConfigError, split.head, 10).value)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"data.train.files: features hold "
                       r"NaN or infinity \(a batch of the streamed examples\)"):
        list(make_dataset(stream, 8, training=True, seed=0, cache=False))
    assert len(list(make_dataset(stream.take(np.arange(20)), 8, training=False, seed=0))) == 3


@pytest.mark.slow
def test_a_nan_csv_row_stops_kexp_train_before_the_run_directory(tmp_path: Path) -> None:
    table = tmp_path / "iris.csv"
    table.write_text((DATA / "iris_train.csv").read_text() + "nan,3.5,1.4,0.2,setosa,0\n")
    config = shipped("iris_mlp.yaml", train={"epochs": 1}, output={"root": str(tmp_path / "runs")})
    config["data"]["train"]["path"] = str(table)
    done = cli(["train", write_config(tmp_path / "iris.yaml", config)])
    assert_user_error(done, "data.train: iris.csv line 122, column 'sepal_length' is missing "
                      "('nan': not a finite number)")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_nan_npz_features_are_a_data_error_not_a_loss_error(tmp_path: Path) -> None:
    from kexp.training.run import train

    with np.load(DATA / "digits_train.npz") as npz:
        images, labels = npz["images"].astype(np.float32), npz["labels"]
    images[5, 2, 3, 0] = np.nan
    np.savez(tmp_path / "digits.npz", images=images, labels=labels)
    config = shipped("digits_cnn.yaml", train={"epochs": 1}, output={"root": str(tmp_path / "r")})
    config["data"]["train"]["path"] = str(tmp_path / "digits.npz")
    file = write_config(tmp_path / "digits.yaml", config)
    with pytest.raises(ConfigError) as caught:
        train(file)
    (issue,) = caught.value.issues
    line = next(i for i, text in enumerate(file.read_text().splitlines(), 1)
                if text.strip() == "x: images")
    assert issue.path == ("data", "train", "x") and issue.line == line
    assert "1 NaN or infinite value(s), the first in example 5 (at index [5, 2, 3, 0])" in str(issue)


# --- classes the training data does not have -------------------------------------------------

def write_images(root: Path, classes: list[str]) -> None:
    from kexp.tf import tf

    for name in classes:
        (root / name).mkdir(parents=True)
        (root / name / "0.png").write_bytes(
            tf.io.encode_png(np.zeros((2, 2, 1), np.uint8)).numpy())


def test_image_dir_test_classes_the_training_data_lacks_are_refused(tmp_path: Path) -> None:
    write_images(tmp_path / "test", ["0", "1", "2"])
    (tmp_path / "test" / "notes").mkdir()  # no images: not a class Keras would read
    spec = {"source": "image_dir", "path": str(tmp_path / "test"), "image_size": [2, 2]}
    message = error_of(spec, SourceContext(class_names=["0"], **AFTER_TRAINING))
    assert (f"data.train.path: {tmp_path / 'test'} has class folder(s) '1', '2' that the "
            "training data does not have (classes: 0)") in message
    assert "data.train.class_names" in message
    kept = read({**spec, "class_names": ["0", "1"]},
                SourceContext(class_names=["0", "1", "2", "3"], **AFTER_TRAINING))
    assert len(kept) == 2 and kept.class_names == ["0", "1"]
    assert "a label id is a position in this list" in error_of(
        {**spec, "class_names": ["1", "0"]}, SourceContext(class_names=["0", "1", "2"]))
    assert "has no folder for the training class(es) '9'" in error_of(
        spec, SourceContext(class_names=["0", "1", "2", "9"], **AFTER_TRAINING))
    assert len(read(spec, SourceContext(class_names=["0", "1", "2"]))) == 3


def test_text_dir_test_classes_the_training_data_lacks_are_refused(tmp_path: Path) -> None:
    for label in ("neg", "pos", "meh"):
        (tmp_path / "t" / label).mkdir(parents=True)
        (tmp_path / "t" / label / "0.txt").write_text(label)
    message = error_of({"source": "text_dir", "path": str(tmp_path / "t")},
                       SourceContext(class_names=["neg", "pos"], **AFTER_TRAINING))
    assert "has class folder(s) 'meh' that the training data does not have" in message


# --- encodings -------------------------------------------------------------------------------

def test_a_csv_in_another_encoding_names_the_line_and_byte(tmp_path: Path) -> None:
    from kexp.data.sources.csv import read_table

    table = tmp_path / "cafes.csv"
    table.write_bytes("x,kind\n1,bar\n2,caf\xe9\n".encode("latin-1"))
    spec = csv_spec(table, label="kind", column_types={"kind": "string"})
    message = error_of(spec)
    assert ("data.train.path: cafes.csv is not UTF-8 text: line 3 has byte(s) e9 (byte offset "
            "18); declare its encoding in data.train.encoding (e.g. latin-1") in message
    with pytest.raises(ConfigError, match="cafes.csv is not UTF-8 text: line 3.*in the "
                       r"encoding of the run's training csv \(data.train.encoding\)"):
        read_table(table, ",", ("input",))  # the reading of `kexp predict --input`
    assert read({**spec, "encoding": "latin-1"}).class_names == ["bar", "café"]
    assert "data.train.encoding: a streamed csv is read by tf.data as UTF-8" in error_of(
        {**spec, "encoding": "latin-1", "stream": True})
    numbers = csv_spec(table, label="x", features=["x"], encoding="latin-1", stream=True)
    assert read(numbers).head(5)[1].tolist() == [1, 2]  # numbers read alike in latin-1
    from kexp.config import load_config

    config = shipped("iris_mlp.yaml")
    config["data"]["train"]["encoding"] = "latin-9x"
    with pytest.raises(ConfigError) as caught:  # a schema error, with its line
        load_config(write_config(tmp_path / "c.yaml", config))
    assert ("c.yaml:14: data.train.encoding: not a text encoding Python knows (codec names: "
            "utf-8, latin-1, cp1252, ...) (got 'latin-9x')") in str(caught.value)


def test_a_binary_file_and_a_byte_order_mark(tmp_path: Path) -> None:
    blob = tmp_path / "model.csv"
    blob.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert "data.train.path: model.csv is not a text file (it holds NUL bytes)" in error_of(
        csv_spec(blob))
    table = tmp_path / "excel.csv"
    table.write_bytes(codecs.BOM_UTF8 + b"a,label\n1,0\n2,1\n")
    for stream in (False, True):
        assert read(csv_spec(table, label="label", stream=stream)).head(5)[0].tolist() == [[1], [2]]
    assert "starts with a UTF-8 byte-order mark" in error_of(csv_spec(
        table, header=False, column_names=["a", "label"], label="label", stream=True))


# --- string labels in arrays -----------------------------------------------------------------

def test_npz_string_labels_become_class_ids_with_recorded_names(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.savez(tmp_path / "d.npz", x=x, y=np.array(["cat", "dog", "ant", "dog", "cat", "ant"]))
    arrays = read({"source": "npz", "path": str(tmp_path / "d.npz")})
    assert arrays.class_names == ["ant", "cat", "dog"]
    assert arrays.y.tolist() == [1, 2, 0, 2, 1, 0] and arrays.label_range() == (0.0, 2.0)
    trained = SourceContext(class_names=["dog", "cat", "ant"], **AFTER_TRAINING)
    assert read({"source": "npz", "path": str(tmp_path / "d.npz")}, trained).y.tolist() == [
        1, 0, 2, 0, 1, 2]  # the training split's ids
    assert "data.train.y: label(s) 'ant' that the training data does not have" in error_of(
        {"source": "npz", "path": str(tmp_path / "d.npz")},
        SourceContext(class_names=["cat", "dog"], **AFTER_TRAINING))
    assert "the training split's labels are numbers" in error_of(
        {"source": "npz", "path": str(tmp_path / "d.npz")}, SourceContext(**AFTER_TRAINING))
    np.savez(tmp_path / "two.npz", x=x, a=np.zeros(6), b=np.array(["u"] * 6))
    assert "data.train.y.b: the labels of output 'b' are text" in error_of(
        {"source": "npz", "path": str(tmp_path / "two.npz"), "y": {"a": "a", "b": "b"}})


@pytest.mark.slow
def test_digits_with_string_labels_train_and_record_class_names(tmp_path: Path) -> None:
    from rich.console import Console

    from kexp.training.run import train

    for part in ("train", "test"):
        with np.load(DATA / f"digits_{part}.npz") as npz:
            np.savez(tmp_path / f"{part}.npz", images=npz["images"],
                     labels=npz["labels"].astype(str))
    config = shipped("digits_cnn.yaml", train={"epochs": 1}, callbacks=[],
                     output={"root": str(tmp_path / "r"), "formats": ["keras"]})
    config["data"]["train"]["path"] = str(tmp_path / "train.npz")
    config["data"]["test"]["path"] = str(tmp_path / "test.npz")
    run = train(write_config(tmp_path / "d.yaml", config), out=Console(file=open(os.devnull, "w")))
    manifest = json.loads((run.directory / "manifest.json").read_text())
    assert manifest["class_names"] == [str(d) for d in range(10)]
    assert run.test_metrics["accuracy"] > 0.2  # chance is 0.1; one epoch


def test_fractional_labels_are_found_for_the_loss_checks(tmp_path: Path) -> None:
    assert Arrays(np.zeros((4, 1)), np.array([0, 1, 2, 1])).fractional_label() is None
    assert Arrays(np.zeros((4, 1)), np.array([0.0, 1.0, 1.5, 2.5])).fractional_label() == (2, 1.5)
    table = tmp_path / "t.csv"
    table.write_text("a,label\n1,0\n2,1.5\n3,2\n")
    for stream in (False, True):
        assert read(csv_spec(table, label="label", stream=stream)).fractional_label() == (1, 1.5)


# --- python loaders --------------------------------------------------------------------------

LOADERS = '''
import sys
import numpy as np
import tensorflow as tf

def leaves():
    sys.exit(0)

def failing():
    data = tf.data.Dataset.from_tensor_slices((np.array([1.0, np.nan, 2.0]), np.zeros(3)))
    return data.map(lambda x, y: (tf.debugging.check_numerics(x, "bad value"), y))

def nan_first():
    return tf.data.Dataset.from_tensor_slices((np.array([[np.nan], [1.0]]), np.zeros(2)))
'''


def test_a_python_loader_that_exits_or_whose_dataset_fails_is_a_config_error(
        tmp_path: Path) -> None:
    module = tmp_path / "loaders.py"
    module.write_text(LOADERS)
    message = error_of({"source": "python", "function": f"{module}:leaves"})
    assert ("data.train.function: leaves() raised SystemExit: it called sys.exit(0) "
            "(loaders.py, line 7)") in message
    message = error_of({"source": "python", "function": f"{module}:failing"})
    assert "data.train.function: failing() returned a dataset that fails when read" in message
    assert "bad value" in message and "Traceback" not in message
    assert "data.train.function: features: 1 NaN or infinite value(s), the first in example 0" in error_of(
        {"source": "python", "function": f"{module}:nan_first"})
    broken = tmp_path / "broken.py"
    broken.write_text("import sys\nsys.exit(3)\n")
    assert "cannot import broken.py: SystemExit: it called sys.exit(3) (broken.py, line 2)" in \
        error_of({"source": "python", "function": f"{broken}:load"})


def test_kexp_train_with_an_exiting_loader_exits_2(tmp_path: Path) -> None:
    (tmp_path / "loaders.py").write_text(LOADERS)
    config = shipped("iris_mlp.yaml", output={"root": str(tmp_path / "runs")})
    config["data"] = {"train": {"source": "python", "function": "loaders.py:leaves"}}
    done = cli(["train", write_config(tmp_path / "c.yaml", config)])
    assert_user_error(done, "c.yaml:7: data.train.function: leaves() raised SystemExit: it "
                      "called sys.exit(0) (loaders.py, line 7)")
    assert not (tmp_path / "runs").exists()


# --- columns and paths -----------------------------------------------------------------------

def test_a_duplicate_csv_column_is_refused_naming_both_positions(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("a,b,a\n1,0,2\n")
    assert ("data.train.path: columns 1 and 3 of t.csv's header are both named 'a'; column "
            "names must be unique") in error_of(csv_spec(table, label="b"))
    assert read(csv_spec(table, label="b", column_names=["a", "b", "c"])).x.tolist() == [[1, 2]]
    assert "data.train.column_names: columns 2 and 3" in error_of(
        csv_spec(table, label="b", column_names=["a", "b", "b"]))


def test_a_folder_or_a_link_loop_where_a_file_is_expected(tmp_path: Path) -> None:
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    os.symlink(tmp_path / "gone.npz", tmp_path / "dangling.npz")
    for source in ({"source": "csv"}, {"source": "npz"}):
        assert f"data.train.path: {tmp_path} is a folder, not a file" in error_of(
            {**source, "path": str(tmp_path)})
        assert f"data.train.path: {tmp_path / 'loop'} is a symbolic link loop" in error_of(
            {**source, "path": str(tmp_path / "loop")})
    assert "is a broken symbolic link (to" in error_of(
        {"source": "npz", "path": str(tmp_path / "dangling.npz")})
    (tmp_path / "f.csv").write_text("a\n1\n")
    assert f"data.train.path: {tmp_path / 'f.csv'} is a file, not a folder" in error_of(
        {"source": "image_dir", "path": str(tmp_path / "f.csv")})


def test_a_link_loop_in_a_config_is_a_config_error(tmp_path: Path) -> None:
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    config = shipped("iris_mlp.yaml", output={"root": str(tmp_path / "runs")})
    config["data"]["train"]["path"] = "loop"
    done = cli(["train", write_config(tmp_path / "c.yaml", config)])
    assert_user_error(done, f"c.yaml:7: data.train.path: {tmp_path / 'loop'} is a symbolic link "
                      "loop")
    assert not (tmp_path / "runs").exists()


# --- resume ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_resume_reads_the_tfrecord_files_the_run_read(tmp_path: Path) -> None:
    import runpy

    runpy.run_path(str(DATA / "write_digits.py"))["write_all"](tmp_path / "data")
    records = tmp_path / "data" / "digits_tfrecord"
    config = yaml.safe_load((CONFIGS / "digits_tfrecord.yaml").read_text())
    config["data"]["train"]["files"] = "data/digits_tfrecord/tr*.tfrecord.gz"
    config["data"].pop("preprocessing", None)
    config.update(train={"epochs": 1}, callbacks=[], output={"root": str(tmp_path / "runs")})
    config.pop("checkpoint", None)
    config["model"]["sequential"]["layers"] = [
        {"Flatten": {}}, {"Dense": {"units": 10, "activation": "softmax"}}]
    file = write_config(tmp_path / "c.yaml", config)
    done = cli(["train", file])
    assert done.returncode == 0, done.stdout + done.stderr
    run = only_run(tmp_path / "runs")
    before = json.loads((run / "manifest.json").read_text())["splits"]
    shutil.copy(records / "train.tfrecord.gz", records / "train-more.tfrecord.gz")
    done = cli(["resume", run, "--set", "train.epochs=2"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "now matches 2 file(s), the run read 1" in done.stdout + done.stderr
    after = json.loads((run / "manifest.json").read_text())
    assert after["status"] == "completed" and after["splits"] == before


def test_a_nan_met_while_a_layer_adapts_is_the_datas_error(tmp_path: Path) -> None:
    from kexp.config.schema import ExperimentConfig
    from kexp.data.preprocessing import attach_preprocessing
    from kexp.model import build_model, compile_model
    from kexp.tf import tf

    values = np.ones((40, 2), np.float32)
    values[30, 1] = np.nan  # past the examples read when the source is read
    write_float_records(tmp_path / "a.tfrecord", values)
    spec = {"source": "tfrecord", "files": str(tmp_path / "a.tfrecord"), "x": "f", "y": "label",
            "features": {"f": {"shape": [2]}, "label": {"dtype": "int64"}}}
    config = ExperimentConfig.model_validate({
        "name": "t", "data": {"train": spec, "preprocessing": {"layers": ["Normalization"]}},
        "model": {"sequential": {"input": {"shape": [2]}, "layers": [{"Dense": {"units": 1}}]}},
        "compile": {"optimizer": "sgd", "loss": "mse"}})
    model = build_model(config)
    compile_model(model, config)
    with pytest.raises(ConfigError) as caught:
        attach_preprocessing(model, config, read(spec), tf.distribute.get_strategy())
    assert str(caught.value) == ("data.train.files: features: NaN or infinity in a batch that "
                                 "tf.data read; a model trained on it has NaN weights: replace "
                                 "or remove it")
