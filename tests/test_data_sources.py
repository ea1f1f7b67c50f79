"""Every data source on small files made here (or shipped), and each of its user errors."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kexp.config.schema import DataSection
from kexp.data.arrays import Arrays
from kexp.data.sources import SourceContext, load_source
from kexp.errors import ConfigError

DATA = Path(__file__).resolve().parents[1] / "configs" / "data"
AT = ("data", "train")


def read(spec: dict[str, Any], context: SourceContext | None = None) -> Any:
    """Validate ``spec`` as data.train and read it."""
    source = DataSection.model_validate({"train": spec}).train
    return load_source(source, AT, context)


def error_of(spec: dict[str, Any], context: SourceContext | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        read(spec, context)
    return str(caught.value)


def batches(stream: Any) -> tuple[Any, Any]:
    return stream.head(10_000)


# --- csv -------------------------------------------------------------------------------------

PENGUINS = {
    "source": "csv", "path": str(DATA / "penguins_train.csv"), "label": "species",
    "features": ["island", "bill_length_mm", "body_mass_g", "sex", "year"],
    "column_types": {"species": "string", "island": "string", "sex": "string", "year": "integer"},
    "fill": {"sex": "unknown", "bill_length_mm": 44.5, "body_mass_g": 4050},
}


def test_csv_column_types_make_named_features_and_string_labels_class_ids() -> None:
    arrays = read(PENGUINS)
    assert isinstance(arrays, Arrays)
    assert arrays.class_names == ["Adelie", "Chinstrap", "Gentoo"]
    assert set(arrays.x) == {"island", "bill_length_mm", "body_mass_g", "sex", "year"}
    assert arrays.x["island"].shape == (275, 1) and arrays.x["island"].dtype.kind == "U"
    assert arrays.x["year"].dtype == np.int64 and arrays.x["body_mass_g"].dtype == np.float32
    assert set(np.unique(arrays.y)) == {0, 1, 2}
    first = (DATA / "penguins_train.csv").read_text().splitlines()[1].split(",")
    assert arrays.class_names[arrays.y[0]] == first[0]
    assert "unknown" in set(arrays.x["sex"].ravel())  # the declared fill of NA


def test_csv_test_split_uses_the_training_class_order() -> None:
    spec = {**PENGUINS, "path": str(DATA / "penguins_test.csv")}
    names = ["Gentoo", "Adelie", "Chinstrap"]  # a training order that is not sorted
    arrays = read(spec, SourceContext(class_names=names))
    rows = [line.split(",")[0] for line in (DATA / "penguins_test.csv").read_text().splitlines()[1:]]
    assert [names[i] for i in arrays.y] == rows
    message = error_of(spec, SourceContext(class_names=["Adelie", "Gentoo"]))
    assert "data.train.label" in message and "'Chinstrap'" in message


def test_csv_streamed_gives_the_same_values_as_loaded_whole() -> None:
    whole = read(PENGUINS)
    stream = read({**PENGUINS, "stream": True})
    assert not isinstance(stream, Arrays) and len(stream) == len(whole)
    assert stream.class_names == whole.class_names
    x, y = batches(stream)
    np.testing.assert_array_equal(y, whole.y)
    for name, column in whole.x.items():
        got = x[name].astype(str) if x[name].dtype == object else x[name]
        np.testing.assert_array_equal(got, column, err_msg=name)


TRICKY_CSV = {  # text both readings must read alike (values, or the same error)
    "empty lines": "a,b,s\n\n1,2,x\n\n3,4,y\n\n",
    "crlf and empty lines": "a,b,s\r\n1,2,x\r\n\r\n3,4,y\r\n",
    "quoted line break": 'a,b,s\n1,2,"x\ny"\n3,4,"y,z"\n',
    "no-break spaces in a string": "a,b,s\n1,2,\u00a0x\u00a0\n 3 ,4, y \n",
    "whole labels beyond float32": "a,b,s\n1,16777217,x\n3,4,y\n",
    "an infinite label": "a,b,s\n1,inf,x\n3,4,y\n",
    "digit separators": "a,b,s\n1_000,2,x\n3,4,y\n",
    "full-width digits": "a,b,s\n\uff11\uff12,2,x\n3,4,y\n",
    "an integer beyond int64": "a,b,s\n1,2,x\n3,4,y\n9223372036854775808,0,z\n",
}


@pytest.mark.parametrize("case", list(TRICKY_CSV))
def test_csv_streamed_and_loaded_agree_on_tricky_text(case: str, tmp_path: Path) -> None:
    file = tmp_path / "t.csv"
    file.write_bytes(TRICKY_CSV[case].encode())
    spec = {"source": "csv", "path": str(file), "label": "b",
            "column_types": {"s": "string", "a": "integer" if "int64" in case else "numeric"}}

    def reading(stream: bool) -> Any:
        try:
            x, y = read({**spec, "stream": stream}).head(100)
        except ConfigError as exc:
            return str(exc)
        strings = [v.decode() if isinstance(v, bytes) else str(v) for v in x["s"].ravel()]
        return x["a"].ravel().tolist(), strings, y.tolist(), str(y.dtype)

    loaded, streamed = reading(False), reading(True)
    assert streamed == loaded
    if case in ("digit separators", "full-width digits"):
        assert "column 'a' is not a number" in loaded and "no '_' separators" in loaded
    if case == "an integer beyond int64":
        assert "line 4, column 'a' is not an integer (int64)" in loaded
    if case == "whole labels beyond float32":
        assert loaded[2:] == ([16777217, 4], "int64")
    if case == "no-break spaces in a string":
        assert loaded[1] == ["\u00a0x\u00a0", "y"]  # ASCII spaces trimmed, as TF trims


def test_a_streamed_csv_with_empty_lines_and_quoted_line_breaks_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "t.csv"
    file.write_text('a,b,s\n1,2,"x\ny"\n\n3,4,y\n')
    spec = {"source": "csv", "path": str(file), "label": "b", "column_types": {"s": "string"}}
    assert len(read(spec)) == 2  # loaded whole, Python's csv reader takes both
    assert ("data.train.path: t.csv line 4 is empty, and a quoted field spans lines (line 3)"
            in error_of({**spec, "stream": True}))


def test_csv_all_numeric_features_are_one_matrix(tmp_path: Path) -> None:
    arrays = read({"source": "csv", "path": str(DATA / "iris_train.csv"), "label": "species_id",
                   "features": ["sepal_length", "petal_width"]})
    assert arrays.x.shape == (120, 2) and arrays.x.dtype == np.float32
    assert arrays.y.dtype == np.int64
    streamed = read({"source": "csv", "path": str(DATA / "iris_train.csv"), "label": "species_id",
                     "features": ["sepal_length", "petal_width"], "stream": True})
    x, y = batches(streamed)
    np.testing.assert_array_equal(x, arrays.x)
    np.testing.assert_array_equal(y, arrays.y)


def test_csv_without_header_takes_column_names(tmp_path: Path) -> None:
    file = tmp_path / "t.csv"
    file.write_text("1;2;0\n3;4;1\n")
    arrays = read({"source": "csv", "path": str(file), "header": False, "delimiter": ";",
                   "column_names": ["a", "b", "y"], "label": "y"})
    np.testing.assert_array_equal(arrays.x, [[1, 2], [3, 4]])
    np.testing.assert_array_equal(arrays.y, [0, 1])
    with pytest.raises(Exception, match="column_names"):
        DataSection.model_validate({"train": {"source": "csv", "path": "t.csv", "header": False}})


def test_csv_errors_name_the_key_path(tmp_path: Path) -> None:
    message = error_of({**PENGUINS, "features": ["island", "bil_length_mm"]})
    assert "data.train.features[1]: no column 'bil_length_mm'" in message
    assert "did you mean 'bill_length_mm'" in message
    message = error_of({**PENGUINS, "fill": {"sex": "unknown"}})
    assert "column 'bill_length_mm' is missing ('NA')" in message
    assert "data.train.fill.bill_length_mm" in message
    message = error_of({**PENGUINS, "column_types": {"species": "string", "sex": "string"}})
    assert "column 'island' is not a number: 'Torgersen'" in message
    assert "data.train.column_types.island: string" in message
    message = error_of({**PENGUINS, "label": "specie"})
    assert "data.train.label: no column 'specie'" in message and "'species'" in message
    wide = tmp_path / "wide.csv"  # was: all 5,000 names in one 40 KB line
    wide.write_text(",".join(f"c{i}" for i in range(5000)) + "\n" + ",".join("0" * 5000) + "\n")
    message = error_of({"source": "csv", "path": str(wide), "label": "c4999x"})
    assert "(columns: c0, c1, c2," in message and "c19, ... (5000 in all))" in message
    assert "c20," not in message and "did you mean 'c4999'" in message
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3\n")
    assert "ragged.csv line 3 has 1 fields, expected 2" in error_of(
        {"source": "csv", "path": str(ragged), "label": "b"})
    assert "data.train.path: file not found" in error_of(
        {"source": "csv", "path": str(tmp_path / "nope.csv")})


# --- npz / npy -------------------------------------------------------------------------------

def test_npz_members_are_memory_mapped_when_stored(tmp_path: Path) -> None:
    file = tmp_path / "d.npz"
    np.savez(file, x=np.arange(12.0).reshape(6, 2), y=np.arange(6))
    arrays = read({"source": "npz", "path": str(file)})
    assert isinstance(arrays.x, np.memmap)
    np.testing.assert_array_equal(arrays.x, np.arange(12.0).reshape(6, 2))
    np.savez_compressed(file, x=np.arange(4.0), y=np.arange(4))
    arrays = read({"source": "npz", "path": str(file)})
    assert not isinstance(arrays.x, np.memmap)  # compressed: read whole, same values
    np.testing.assert_array_equal(arrays.x, np.arange(4.0))


@pytest.mark.parametrize("mmap", [True, False])
def test_npz_file_is_closed_after_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          mmap: bool) -> None:
    import kexp.data.sources.npz as npz_source

    opened = []
    real_load = np.load

    def load(*args: Any, **kwargs: Any) -> Any:
        opened.append(real_load(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(npz_source.np, "load", load)
    np.savez(tmp_path / "d.npz", x=np.arange(6.0).reshape(3, 2), y=np.arange(3))
    arrays = read({"source": "npz", "path": str(tmp_path / "d.npz"), "mmap": mmap})
    (archive,) = opened
    assert archive.fid is None and archive.zip is None  # NpzFile.close() was called
    np.testing.assert_array_equal(arrays.x[2], [4.0, 5.0])  # still readable afterwards


def test_npy_files_are_memory_mapped(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.ones((5, 3), np.float32))
    np.save(tmp_path / "y.npy", np.arange(5))
    arrays = read({"source": "npy", "x": str(tmp_path / "x.npy"), "y": str(tmp_path / "y.npy")})
    assert isinstance(arrays.x, np.memmap) and arrays.x.shape == (5, 3)


def test_npz_wrong_key_and_mismatched_lengths(tmp_path: Path) -> None:
    file = tmp_path / "d.npz"
    np.savez(file, images=np.zeros((4, 2)), labels=np.arange(3))
    message = error_of({"source": "npz", "path": str(file), "x": "image", "y": "labels"})
    assert "data.train.x: no array 'image'" in message and "did you mean 'images'" in message
    message = error_of({"source": "npz", "path": str(file), "x": "images", "y": "labels"})
    assert "data.train: features and labels have different numbers of examples" in message
    assert "x has 4, y has 3" in message
    text = tmp_path / "notes.npz"
    text.write_text("just some text\n")  # was: "contains pickled (object) data"
    message = error_of({"source": "npz", "path": str(text), "x": "images"})
    assert "it is neither an npz archive nor an .npy array" in message


# --- image_dir / text_dir --------------------------------------------------------------------

def write_images(root: Path, per_class: int = 3) -> dict[str, list[np.ndarray]]:
    from kexp.tf import tf

    made: dict[str, list[np.ndarray]] = {}
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (4, 4, 1), dtype=np.uint8)
            (root / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
            made.setdefault(name, []).append(pixels)
    return made


def test_image_dir_reads_folders_as_keras_does(tmp_path: Path) -> None:
    made = write_images(tmp_path / "imgs")
    spec = {"source": "image_dir", "path": str(tmp_path / "imgs"), "image_size": [4, 4],
            "color_mode": "grayscale"}
    stream = read(spec)
    assert stream.class_names == ["cat", "dog"] and len(stream) == 6
    x, y = batches(stream)
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(x, np.stack(made["cat"] + made["dog"]).astype(np.float32))
    assert stream.files == [str(tmp_path / "imgs")]
    assert [Path(n).name for n in stream.names] == ["0.png", "1.png", "2.png"] * 2


def test_image_dir_errors(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", per_class=1)
    (tmp_path / "imgs" / "dog" / "broken.png").write_bytes(b"not an image at all")
    spec = {"source": "image_dir", "path": str(tmp_path / "imgs"), "image_size": [4, 4]}
    message = error_of(spec)
    assert "data.train.path: unreadable image" in message and "broken.png" in message
    assert "data.train.path: folder not found" in error_of({**spec, "path": str(tmp_path / "no")})


def test_an_empty_class_folder_and_a_grayscale_bmp_are_said_as_what_they_are(
        tmp_path: Path) -> None:
    """Was: an empty class folder reported as 'labels range from 0 to 2'; grayscale BMPs as
    'unreadable image ... replace or remove it'."""
    write_images(tmp_path / "imgs", per_class=1)
    (tmp_path / "imgs" / "emu").mkdir()
    spec = {"source": "image_dir", "path": str(tmp_path / "imgs"), "image_size": [4, 4]}
    message = error_of(spec)
    assert "data.train.path:" in message and "class folder(s) 'emu' holding no" in message
    (tmp_path / "imgs" / "emu").rmdir()
    pixels = np.zeros((4, 4, 3), np.uint8)
    (tmp_path / "imgs" / "cat" / "b.bmp").write_bytes(_bmp(pixels))
    message = error_of({**spec, "color_mode": "grayscale"})
    assert "data.train.color_mode:" in message and "b.bmp" in message
    assert "use color_mode: rgb, or convert the images to PNG" in message
    assert len(read({**spec, "color_mode": "rgb"})) == 3  # in color the BMP reads


def _bmp(pixels: np.ndarray) -> bytes:
    """A 24-bit BMP of ``pixels`` (height, width, 3), rows bottom-up, padded to 4 bytes."""
    import struct

    height, width, _ = pixels.shape
    row = width * 3 + (-width * 3) % 4
    body = b"".join(pixels[y, :, ::-1].tobytes().ljust(row, b"\0") for y in range(height - 1, -1, -1))
    header = struct.pack("<2sIHHI", b"BM", 54 + len(body), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(body), 2835, 2835, 0, 0)
    return header + info + body


def test_a_truncated_image_is_a_config_error_before_training(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", per_class=2)
    whole = (tmp_path / "imgs" / "cat" / "0.png").read_bytes()
    truncated = tmp_path / "imgs" / "dog" / "1.png"
    truncated.write_bytes(whole[:60])  # a PNG signature and header, then nothing
    spec = {"source": "image_dir", "path": str(tmp_path / "imgs"), "image_size": [4, 4]}
    message = error_of(spec)
    assert f"data.train.path: unreadable image: {truncated} cannot be decoded (" in message
    assert "replace or remove it" in message and "Op:" not in message

    from kexp.inputs import read_input
    from kexp.errors import UserError

    config = type("Run", (), {"data": DataSection.model_validate({"train": spec})})()
    with pytest.raises(UserError) as caught:  # kexp predict RUN --input that file
        read_input(truncated, config, labels=False)
    assert str(caught.value).startswith(f"1.png: unreadable image: {truncated} cannot be")
    assert "kexp-image-" not in str(caught.value)  # not the temporary link it is read through
    predicted = read_input(tmp_path / "imgs" / "cat" / "0.png", config, labels=False)
    assert predicted.names == [str(tmp_path / "imgs" / "cat" / "0.png")]


def test_text_dir_reads_one_folder_per_class(tmp_path: Path) -> None:
    for label, texts in {"neg": ["bad", "awful"], "pos": ["good", "great", "fine"]}.items():
        (tmp_path / "t" / label).mkdir(parents=True)
        for i, text in enumerate(texts):
            (tmp_path / "t" / label / f"{i}.txt").write_text(text)
    stream = read({"source": "text_dir", "path": str(tmp_path / "t")})
    x, y = batches(stream)
    assert stream.class_names == ["neg", "pos"]
    assert [t.decode() for t in x] == ["bad", "awful", "good", "great", "fine"]
    np.testing.assert_array_equal(y, [0, 0, 1, 1, 1])
    assert [Path(n).read_text() for n in stream.names] == [t.decode() for t in x]
    assert [Path(n).read_text() for n in stream.take(np.array([1, 3])).names] == ["awful", "great"]


# --- tfrecord --------------------------------------------------------------------------------

def write_records(file: Path, n: int, compression: str | None = None) -> np.ndarray:
    from kexp.tf import tf

    values = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    options = tf.io.TFRecordOptions(compression_type=compression)
    with tf.io.TFRecordWriter(str(file), options) as writer:
        for i, row in enumerate(values):
            feature = {
                "features": tf.train.Feature(float_list=tf.train.FloatList(value=row)),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
                "png": tf.train.Feature(bytes_list=tf.train.BytesList(value=[
                    tf.io.encode_png(np.full((2, 2, 1), i, np.uint8)).numpy()])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature))
                         .SerializeToString())
    return values


def tfrecord_spec(files: Any, **extra: Any) -> dict[str, Any]:
    return {"source": "tfrecord", "files": files, "x": "features", "y": "label",
            "features": {"features": {"shape": [3]}, "label": {"dtype": "int64"}}, **extra}


def test_tfrecord_files_glob_and_compression(tmp_path: Path) -> None:
    a = write_records(tmp_path / "part-0.tfrecord.gz", 4, "GZIP")
    b = write_records(tmp_path / "part-1.tfrecord.gz", 3, "GZIP")
    stream = read(tfrecord_spec(str(tmp_path / "part-*.tfrecord.gz"), compression="gzip"))
    assert len(stream) == 7 and stream.source_files == 2
    x, y = batches(stream)
    np.testing.assert_array_equal(x, np.concatenate([a, b]))
    np.testing.assert_array_equal(y, [0, 1, 0, 1, 0, 1, 0])


def test_tfrecord_decodes_images(tmp_path: Path) -> None:
    write_records(tmp_path / "r.tfrecord", 3)
    stream = read({"source": "tfrecord", "files": str(tmp_path / "r.tfrecord"), "x": "png",
                   "features": {"png": {"dtype": "string", "decode": "image",
                                        "shape": [2, 2, 1], "channels": 1}}})
    x, y = batches(stream)
    assert y is None and x.shape == (3, 2, 2, 1)
    np.testing.assert_array_equal(x[:, 0, 0, 0], [0, 1, 2])


def test_tfrecord_errors(tmp_path: Path) -> None:
    write_records(tmp_path / "r.tfrecord", 2)
    file = str(tmp_path / "r.tfrecord")
    message = error_of({**tfrecord_spec(file), "x": "featurs",
                        "features": {"featurs": {"shape": [3]}, "label": {"dtype": "int64"}}})
    assert "data.train.features.featurs: the records have no feature 'featurs'" in message
    assert "did you mean 'features'" in message
    message = error_of(tfrecord_spec(file, features={"features": {"dtype": "int64", "shape": [3]},
                                                     "label": {"dtype": "int64"}}))
    assert "data.train.features.features.dtype" in message and "float32" in message
    assert "data.train.files: no file matches" in error_of(tfrecord_spec(str(tmp_path / "*.gz")))
    message = error_of(tfrecord_spec(file, compression="gzip"))
    assert "data.train.files" in message and "is it written with compression: gzip?" in message
    assert "data.train.compression says so" in message
    assert "function_node" not in message and "[Op:" not in message
    # a file on the command line (predict) follows the run's setting: there is no
    # input.compression to point to (was: '... input.compression says so')
    source = DataSection.model_validate({"train": tfrecord_spec(file, compression="gzip")}).train
    with pytest.raises(ConfigError) as caught:
        load_source(source, ("input",))
    assert "the run's data.train.compression, which files given on the command line follow, " \
        "says so" in str(caught.value)
    # was: a ValueError traceback from tf.ensure_shape inside the pipeline
    for channels, shape in ((3, [2, 2, 1]), (0, [2, 2, 3])):
        png = {"dtype": "string", "decode": "image", "shape": shape, "channels": channels}
        message = error_of({"source": "tfrecord", "files": file, "x": "png",
                            "features": {"png": png}})
        assert "data.train.features.png.shape: the first 'png' decodes" in message
        assert f"to an image of shape [2, 2, {3 if channels else 1}], not {shape}" in message
    with pytest.raises(Exception, match="features does not declare"):
        DataSection.model_validate({"train": tfrecord_spec(file, y="lbl")})


# --- keras.datasets --------------------------------------------------------------------------

@pytest.fixture
def keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Keras cache (Keras reads KERAS_HOME once, at import: patch what it read),
    and no network: every download fails, as it does offline, whether or not there is one."""
    import urllib.error

    from keras.src.backend import config
    from keras.src.utils import file_utils

    def offline(url: str, *args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "keras"))
    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    return tmp_path / "keras" / "datasets"


def test_keras_dataset_from_a_pre_placed_cache_file(keras_home: Path) -> None:
    folder = keras_home / "fashion-mnist"
    folder.mkdir(parents=True)
    images = {"train": np.arange(3 * 784, dtype=np.uint8).reshape(3, 28, 28),
              "t10k": np.full((2, 28, 28), 7, np.uint8)}
    labels = {"train": np.array([1, 9, 0], np.uint8), "t10k": np.array([3, 4], np.uint8)}
    for part in ("train", "t10k"):  # the idx layout keras.datasets.fashion_mnist reads
        with gzip.open(folder / f"{part}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(b"\0" * 8 + labels[part].tobytes())
        with gzip.open(folder / f"{part}-images-idx3-ubyte.gz", "wb") as f:
            f.write(b"\0" * 16 + images[part].tobytes())
    train = read({"source": "keras", "name": "fashion_mnist"})
    np.testing.assert_array_equal(train.x, images["train"])
    np.testing.assert_array_equal(train.y, labels["train"])
    assert train.class_names[9] == "Ankle boot" and len(train.files) == 4
    test = read({"source": "keras", "name": "fashion_mnist", "part": "test"})
    np.testing.assert_array_equal(test.y, labels["t10k"])


def test_keras_dataset_not_cached_says_where_to_put_it(keras_home: Path) -> None:
    message = error_of({"source": "keras", "name": "mnist"})
    assert "data.train.name: keras dataset 'mnist' is not in the Keras cache" in message
    assert "no network in this test" in message  # the patched download, not the real one
    assert str(keras_home / "mnist.npz") in message and "mnist.npz" in message
    keras_home.mkdir(parents=True)
    (keras_home / "mnist.npz").write_bytes(b"half a download")  # fails Keras' hash check
    message = error_of({"source": "keras", "name": "mnist"})
    assert (f"data.train.name: keras dataset 'mnist': {keras_home / 'mnist.npz'} was in the "
            "Keras cache, but its hash does not match the one Keras expects") in message
    assert "Keras removed it to download it again, which failed (" in message
    assert not (keras_home / "mnist.npz").exists()  # as the message says
    assert f"Put a good copy at {keras_home / 'mnist.npz'} (from https://" in message
    message = error_of({"source": "keras", "name": "imdb", "options": {"num_word": 10}})
    assert "data.train.options.num_word" in message and "did you mean 'num_words'" in message


# --- tfds ------------------------------------------------------------------------------------

def test_tfds_without_the_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails as if absent
    message = error_of({"source": "tfds", "name": "mnist"})
    assert "data.train.source: source 'tfds' needs the optional package tensorflow-datasets" in message
    assert "pip install 'kexp[tfds]'" in message


# --- python ----------------------------------------------------------------------------------

MODULE = '''
import numpy as np
import tensorflow as tf

def arrays(n=4):
    return np.arange(n * 2, dtype="float32").reshape(n, 2), np.arange(n) % 2

def as_dict():
    return {"x": np.zeros((3, 1)), "y": np.ones(3)}

def dataset(n=5):
    x = np.arange(n * 2, dtype="float32").reshape(n, 2)
    return tf.data.Dataset.from_tensor_slices((x, np.arange(n) % 2)).filter(lambda a, b: True)

def endless():
    return tf.data.Dataset.range(10).repeat().filter(lambda i: i >= 0)

def repeated():
    return tf.data.Dataset.range(10).repeat()

def shuffled():
    return tf.data.Dataset.range(500).shuffle(500)

def broken():
    raise RuntimeError("no data today")

def wrong():
    return "text"
'''


def test_python_source_returns_arrays_or_a_dataset(tmp_path: Path) -> None:
    module = tmp_path / "make_data.py"
    module.write_text(MODULE)
    arrays = read({"source": "python", "function": f"{module}:arrays", "kwargs": {"n": 6}})
    assert isinstance(arrays, Arrays) and len(arrays) == 6 and arrays.files == [str(module)]
    assert len(read({"source": "python", "function": f"{module}:as_dict"})) == 3
    stream = read({"source": "python", "function": f"{module}:dataset"})
    assert len(stream) == 5  # unknown cardinality (filter): counted once
    x, y = batches(stream)
    np.testing.assert_array_equal(y, [0, 1, 0, 1, 0])


def test_python_source_errors(tmp_path: Path) -> None:
    module = tmp_path / "make_data.py"
    module.write_text(MODULE)
    message = error_of({"source": "python", "function": f"{module}:arrayz"})
    assert "data.train.function" in message and "did you mean 'arrays'" in message
    assert "broken() raised RuntimeError: no data today" in error_of(
        {"source": "python", "function": f"{module}:broken"})
    assert "returned str" in error_of({"source": "python", "function": f"{module}:wrong"})
    assert "shuffled() returned a dataset whose order changes from pass to pass" in error_of(
        {"source": "python", "function": f"{module}:shuffled"})
    assert "endless" not in error_of({"source": "python", "function": f"{module}:repeated"})
    assert "returned a dataset that is infinite (does it .repeat()?)" in error_of(
        {"source": "python", "function": f"{module}:repeated"})


def test_an_endless_dataset_of_unknown_length_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: counted inside TensorFlow forever, deaf to Ctrl-C (.repeat().filter(...) has no
    known cardinality). Counted from Python in chunks now, up to a limit (made small here)."""
    import kexp.data.stream as stream

    module = tmp_path / "make_data.py"
    module.write_text(MODULE)
    monkeypatch.setattr(stream, "COUNT_LIMIT", 200_000)
    message = error_of({"source": "python", "function": f"{module}:endless"})
    assert "endless() returned a dataset that has more than 200,000 examples and counting: " \
           "it looks endless" in message
    assert "cannot import module 'no_such_module_here'" in error_of(
        {"source": "python", "function": "no_such_module_here:load"})


def test_tfds_reads_a_prepared_dataset(tmp_path: Path) -> None:
    """A real TFDS builder prepared offline into tmp_path; needs the optional extra."""
    tfds = pytest.importorskip(
        "tensorflow_datasets",
        reason="tensorflow-datasets (the optional extra 'kexp[tfds]') is not installed here",
    )

    class TinyParity(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self) -> Any:
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Tensor(shape=(2, 2, 1), dtype=np.float32),
                    "label": tfds.features.ClassLabel(names=["even", "odd"])}),
                supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager: Any) -> Any:
            return {"train": self._generate_examples(6), "test": self._generate_examples(2)}

        def _generate_examples(self, n: int) -> Any:
            for i in range(n):
                yield i, {"image": np.full((2, 2, 1), i, np.float32), "label": i % 2}

    TinyParity(data_dir=str(tmp_path)).download_and_prepare()
    stream = read({"source": "tfds", "name": "tiny_parity", "data_dir": str(tmp_path)})
    assert len(stream) == 6 and stream.class_names == ["even", "odd"]
    x, y = batches(stream)
    np.testing.assert_array_equal(y, x[:, 0, 0, 0].astype(int) % 2)
    half = read({"source": "tfds", "name": "tiny_parity", "split": "train[:50%]",
                 "data_dir": str(tmp_path), "x": "image", "y": "label"})
    assert len(half) == 3
    assert "is not prepared in" in error_of(
        {"source": "tfds", "name": "tiny_parity", "data_dir": str(tmp_path / "empty")})
