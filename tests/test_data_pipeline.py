"""Splits (seeded, recorded, reproduced), the tf.data pipeline, and data fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

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
