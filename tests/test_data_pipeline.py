"""Splits (seeded, recorded, reproduced), the tf.data pipeline, and data fingerprints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kexp.config.schema import DataSection
from kexp.data.arrays import Arrays
from kexp.data.fingerprint import directory_sha256, fingerprint
from kexp.data.pipeline import make_dataset, pipeline_record
from kexp.data.splits import fraction_indices, load_splits
from kexp.data.stream import Stream
from kexp.errors import ConfigError
from kexp.manifest import Manifest
from kexp.runs import changed_data_files

MODULE = '''
import numpy as np
import tensorflow as tf

X = np.arange(40, dtype="float32").reshape(20, 2)
Y = np.arange(20) % 3

def arrays():
    return X, Y

def dataset():
    return tf.data.Dataset.from_tensor_slices((X, Y))
'''


@pytest.fixture
def module(tmp_path: Path) -> Path:
    file = tmp_path / "source.py"
    file.write_text(MODULE)
    return file


def section(train: dict, **extra: object) -> DataSection:
    return DataSection.model_validate({"train": train, **extra})


def values(examples: object) -> np.ndarray:
    x, _ = examples.head(1000)
    return np.asarray(x)


def test_fraction_indices_are_seeded_disjoint_and_complete() -> None:
    a = fraction_indices(100, {"validation": 0.2, "test": 0.1}, seed=5)
    assert a["validation"].size == 20 and a["test"].size == 10 and a["train"].size == 70
    everything = np.concatenate(list(a.values()))
    assert sorted(everything) == list(range(100))
    b = fraction_indices(100, {"validation": 0.2, "test": 0.1}, seed=5)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = fraction_indices(100, {"validation": 0.2, "test": 0.1}, seed=6)
    assert not np.array_equal(a["validation"], c["validation"])


def test_streamed_and_in_memory_sources_split_the_same_way(module: Path) -> None:
    fractions = {"validation": {"split": 0.25}, "test": {"split": 0.25}}
    memory = load_splits(section({"source": "python", "function": f"{module}:arrays"},
                                 **fractions), seed=3)
    stream = load_splits(section({"source": "python", "function": f"{module}:dataset"},
                                 **fractions), seed=3)
    assert isinstance(memory.train, Arrays) and isinstance(stream.train, Stream)
    for name in ("train", "validation", "test"):
        np.testing.assert_array_equal(values(getattr(stream, name)),
                                      values(getattr(memory, name)))
    record = stream.record()
    assert record["validation"] == {"examples": 5, "from": "fraction of train",
                                    "read": "tf.data stream"}


def test_saved_indices_reproduce_the_split_and_catch_changed_data(module: Path, tmp_path: Path) -> None:
    data = section({"source": "python", "function": f"{module}:dataset"},
                   validation={"split": 0.3})
    first = load_splits(data, seed=11)
    first.save_indices(tmp_path / "splits.npz")
    with np.load(tmp_path / "splits.npz") as saved:
        indices = {k: saved[k] for k in saved.files}
    again = load_splits(data, seed=999, saved_indices=indices)  # the seed no longer matters
    np.testing.assert_array_equal(values(again.validation), values(first.validation))
    only_test = load_splits(data, seed=0, wanted=("test",), saved_indices=indices)
    assert only_test.validation is None
    indices["validation"] = np.array([0, 25])
    with pytest.raises(ConfigError, match="the data changed since the run"):
        load_splits(data, seed=0, saved_indices=indices)


def test_training_pipeline_is_seeded_and_reshuffles_each_epoch(module: Path) -> None:
    train = load_splits(section({"source": "python", "function": f"{module}:dataset"}), 0).train

    def epochs(seed: int) -> list[list[float]]:
        dataset = make_dataset(train, 4, training=True, seed=seed)
        return [np.concatenate([x[:, 0] for x, _ in dataset.as_numpy_iterator()]).tolist()
                for _ in range(2)]

    one, two = epochs(1), epochs(1)
    assert one == two and one[0] != one[1]
    assert sorted(one[0]) == [float(2 * i) for i in range(20)]
    evaluation = make_dataset(train, 4, training=False, seed=1)
    assert [b[0][0, 0] for b in evaluation.as_numpy_iterator()] == [0.0, 8.0, 16.0, 24.0, 32.0]


def test_cache_file_lives_in_the_run_directory(module: Path, tmp_path: Path) -> None:
    train = load_splits(section({"source": "python", "function": f"{module}:dataset"}), 0).train
    file = tmp_path / "run" / "cache" / "train"
    dataset = make_dataset(train, 8, training=True, seed=0, cache="file", cache_file=file,
                           drop_remainder=True)
    assert [len(x) for x, _ in dataset.as_numpy_iterator()] == [8, 8]  # remainder dropped
    assert list(file.parent.glob("train*.index")), list(file.parent.iterdir())


def test_pipeline_record_and_shard_policy(module: Path) -> None:
    splits = load_splits(section({"source": "python", "function": f"{module}:dataset"},
                                 validation={"split": 0.5}), 0)
    data = section({"source": "npz", "path": "x.npz"}, shuffle_buffer=7)
    record = pipeline_record(splits, data)
    assert record["train"] == {"cache": "memory", "shuffle_buffer": 7, "shard_policy": "data"}
    assert record["validation"]["shuffle_buffer"] is None
    with pytest.raises(ConfigError, match="data.shard_policy: 'file' needs a source"):
        pipeline_record(splits, section({"source": "npz", "path": "x.npz"}, shard_policy="file"))
    dataset = make_dataset(splits.train, 2, training=True, seed=0)
    from kexp.tf import tf

    assert (dataset.options().experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.DATA)


def test_directory_fingerprint_is_a_stable_listing(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    (folder / "b").mkdir(parents=True)
    (folder / "a").mkdir()
    (folder / "b" / "1.png").write_bytes(b"one")
    (folder / "a" / "2.png").write_bytes(b"two")
    before = fingerprint(folder)
    assert before == directory_sha256(folder)
    (folder / "a" / "2.png").write_bytes(b"two")  # rewritten, same bytes: same fingerprint
    assert fingerprint(folder) == before
    (folder / "a" / "2.png").rename(folder / "a" / "3.png")
    assert fingerprint(folder) != before


def test_evaluate_warns_when_a_data_directory_changed(tmp_path: Path) -> None:
    folder = tmp_path / "imgs" / "cat"
    folder.mkdir(parents=True)
    (folder / "1.png").write_bytes(b"pixels")
    single = tmp_path / "x.npz"
    np.savez(single, x=np.zeros(2))
    manifest = Manifest(tmp_path / "manifest.json", {})
    manifest.record_data_files([str(tmp_path / "imgs"), str(single)])
    assert changed_data_files(manifest) == []
    (folder / "2.png").write_bytes(b"a new image")
    assert changed_data_files(manifest) == [f"{tmp_path / 'imgs'} (content changed)"]
    assert json.loads((tmp_path / "manifest.json").read_text())["data_files"]


# --- cache: memory only for a stream that fits --------------------------------------------

def counted_stream(n: int, width: int) -> tuple[Stream, list[int]]:
    """A stream of ``n`` examples of ``width`` floats that counts how often it is read."""
    from kexp.tf import tf

    reads = [0]

    def note(i: Any) -> Any:
        reads[0] += 1
        return i

    def build() -> Any:
        indices = tf.data.Dataset.range(n).map(
            lambda i: tf.py_function(note, [i], tf.int64))
        return indices.map(lambda i: (tf.fill([width], tf.cast(i, tf.float32)), i))

    return Stream(build, n, True), reads


def test_default_cache_keeps_a_stream_too_large_for_memory_out_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import kexp.data.pipeline as pipeline

    stream, reads = counted_stream(30, 100)
    estimate = stream.memory_estimate()
    assert estimate >= 30 * 100 * 4  # at least the decoded floats
    assert pipeline.choose_cache(stream, True, None, memory=8 * estimate) == ("memory", estimate)
    small = 8 * estimate - 8  # an eighth of it is just short of the estimate
    cached, _ = pipeline.choose_cache(stream, True, None, memory=small)
    assert cached.startswith("none (about ") and "read from the files each epoch" in cached
    assert pipeline.choose_cache(stream, "memory", None, memory=small)[0] == "memory"
    assert pipeline.choose_cache(stream, "file", Path("c/train"), memory=small)[0] == "file: c/train"
    arrays = Arrays(np.zeros((3, 2)), np.zeros(3))
    assert pipeline.choose_cache(arrays, True, None, memory=1)[0].startswith("none (examples")

    def epochs(dataset: Any) -> None:
        for _ in range(2):
            list(dataset.as_numpy_iterator())

    monkeypatch.setattr(pipeline, "budget", lambda memory=None: estimate - 1)
    reads[0] = 0
    epochs(make_dataset(stream, 8, training=True, seed=0))  # the default: cache=True
    assert reads[0] == 60  # read from the source in both epochs: nothing held in memory
    reads[0] = 0
    monkeypatch.setattr(pipeline, "budget", lambda memory=None: estimate)
    epochs(make_dataset(stream, 8, training=True, seed=0))
    assert reads[0] == 30  # fits: decoded once, epoch 2 from the memory cache


def test_asking_for_a_memory_cache_of_a_large_stream_warns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import kexp.data.pipeline as pipeline
    from kexp.data.splits import Splits
    from kexp.errors import ConfigWarning

    stream, _ = counted_stream(30, 100)
    monkeypatch.setattr(pipeline, "budget", lambda memory=None: 1000)
    splits = Splits(train=stream)
    with pytest.warns(ConfigWarning) as caught:
        record = pipeline_record(splits, section({"source": "npz", "path": "x.npz"},
                                                 cache="memory"))
    assert record["train"]["cache"] == "memory"
    (warning,) = caught
    assert str(warning.message).startswith("data.cache: the train split is read as a stream")
    assert "may run out of memory during epoch 1" in str(warning.message)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default choice is quiet: it does not cache
        record = pipeline_record(splits, section({"source": "npz", "path": "x.npz"}))
    assert record["train"]["cache"].startswith("none (about ")


def test_a_csv_streams_when_larger_than_an_eighth_of_memory_or_1_gib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import kexp.data.sources.csv as csv_source

    file = tmp_path / "t.csv"
    file.write_text("a,b\n" + "1,2\n" * 250)  # 1004 bytes
    spec = section({"source": "csv", "path": str(file), "label": "b"}).train
    assert not csv_source._should_stream(spec, file, memory=8 * 1004)
    assert csv_source._should_stream(spec, file, memory=8 * 1003)
    for forced in (True, False):  # a declared `stream` wins over the size
        declared = section({"source": "csv", "path": str(file), "label": "b",
                            "stream": forced}).train
        assert csv_source._should_stream(declared, file, memory=1) is forced
        assert csv_source._should_stream(declared, file, memory=1 << 40) is forced
    monkeypatch.setattr(csv_source, "STREAM_ABOVE_BYTES", 1003)  # the 1 GiB cap, scaled down
    assert csv_source._should_stream(spec, file, memory=1 << 40)
    monkeypatch.setattr(csv_source, "budget", lambda memory=None: 1 << 40)
    assert isinstance(csv_source.load_csv(spec, ("data", "train")), Stream)


def test_a_container_memory_limit_lowers_the_share(tmp_path: Path) -> None:
    from kexp.data.memory import cgroup_limit

    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert cgroup_limit((str(v2), str(v1))) is None  # neither file: no limit
    v2.write_text("max\n")
    v1.write_text("2147483648\n")
    assert cgroup_limit((str(v2), str(v1))) == 2 << 30
    v2.write_text("1073741824\n")
    assert cgroup_limit((str(v2), str(v1))) == 1 << 30


# --- fraction splits; reading a run's splits again ----------------------------------------

def test_fractions_that_leave_no_training_examples_are_a_config_error(tmp_path: Path) -> None:
    file = tmp_path / "three.csv"
    file.write_text("a,b\n1,0\n2,1\n3,0\n")
    data = section({"source": "csv", "path": str(file), "label": "b"},
                   validation={"split": 0.5}, test={"split": 0.4})
    with pytest.raises(ConfigError) as caught:
        load_splits(data, seed=0)
    message = str(caught.value)
    assert message.startswith("data.validation.split: the fractions leave no training examples")
    assert "the training source has 3, 2 for validation, 1 for test" in message


def test_a_runs_test_source_is_read_again_without_its_training_source(tmp_path: Path) -> None:
    from kexp.data.splits import Recorded

    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("x,label\n1,b\n2,c\n3,a\n4,b\n")
    test.write_text("x,label\n5,c\n6,b\n")
    spec = {"source": "csv", "label": "label", "column_types": {"label": "string"}}
    data = section({**spec, "path": str(train)}, validation={"split": 0.25},
                   test={**spec, "path": str(test)})
    trained = load_splits(data, seed=0)
    assert trained.class_names == ["a", "b", "c"]
    train.unlink()  # moved away since the run
    recorded = Recorded(class_names=["c", "b", "a"])  # the run's order, whatever it was
    again = load_splits(data, seed=0, wanted=("test",), recorded=recorded)
    assert again.train is None and again.class_names == ["c", "b", "a"]
    np.testing.assert_array_equal(again.test.y, [0, 1])  # ids in the run's order
    with pytest.raises(ConfigError, match="file not found"):  # a fraction split needs train
        load_splits(data, seed=0, wanted=("validation",), recorded=recorded)


def write_records(file: Path, values: range) -> None:
    from kexp.tf import tf

    with tf.io.TFRecordWriter(str(file)) as writer:
        for v in values:
            feature = {"v": tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)])),
                       "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[v % 2]))}
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())


def test_a_fraction_split_of_a_tfrecord_glob_reads_the_files_the_run_read(tmp_path: Path) -> None:
    from kexp.data.splits import Recorded
    from kexp.errors import ConfigWarning

    write_records(tmp_path / "part-1.tfrecord", range(0, 10))
    write_records(tmp_path / "part-2.tfrecord", range(10, 20))
    data = section({"source": "tfrecord", "files": str(tmp_path / "part-*.tfrecord"),
                    "features": {"v": {"dtype": "float32"}, "y": {"dtype": "int64"}},
                    "x": "v", "y": "y"}, test={"split": 0.3})
    run = load_splits(data, seed=4)
    record = run.record()
    assert record["train"]["files"] == [str(tmp_path / f"part-{i}.tfrecord") for i in (1, 2)]
    assert "files" not in record["test"]  # a fraction: read again from train's files
    held_out = values(run.test)
    recorded = Recorded.from_manifest({"splits": record, "class_names": None})

    write_records(tmp_path / "part-0.tfrecord", range(100, 105))  # new, sorts first
    with pytest.warns(ConfigWarning) as caught:
        again = load_splits(data, seed=4, wanted=("test",), saved_indices=run.indices,
                            recorded=recorded)
    np.testing.assert_array_equal(values(again.test), held_out)  # not shifted by 5 records
    message = str(caught[0].message)
    assert message.startswith("data.train.files: ") and "now matches 3 file(s), the run read 2" in message
    assert str(tmp_path / "part-0.tfrecord") in message and "using the run's files" in message
    assert not np.array_equal(values(load_splits(data, seed=4, saved_indices=run.indices).test),
                              held_out)  # what reading the glob again would have evaluated on
    (tmp_path / "part-2.tfrecord").unlink()
    with pytest.raises(ConfigError, match="1 of them no longer exist"):
        load_splits(data, seed=4, wanted=("test",), saved_indices=run.indices, recorded=recorded)
