"""Preprocessing layers: adapted on the training split only, saved inside the model, so a
saved model given raw input computes what training saw; augmentation only in training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from conftest import DATA, shipped, write_config
from kexp.errors import ConfigError


def quiet() -> Console:
    return Console(file=open("/dev/null", "w"))


def train(config: dict, tmp_path: Path):
    from kexp.training.run import train as run_train

    return run_train(write_config(tmp_path / "config.yaml", config), out=quiet())


def digits(tmp_path: Path, preprocessing: dict, **extra: object) -> dict:
    config = shipped(
        "digits_cnn.yaml", train={"epochs": 1}, callbacks=[], checkpoint={"monitor": None},
        output={"root": str(tmp_path / "experiments"), "formats": ["keras", "h5"]}, **extra,
    )
    config["data"]["preprocessing"] = preprocessing
    config["data"]["validation"] = {"split": 0.3}
    config["model"]["sequential"]["layers"] = [  # small: the test is about the data
        {"Flatten": {}}, {"Dense": {"units": 10, "activation": "softmax"}}]
    return config


def test_normalization_adapts_on_the_training_split_and_is_saved_in_the_model(tmp_path: Path) -> None:
    from kexp.tf import keras

    run = train(digits(tmp_path, {"layers": [{"Normalization": {}}]}), tmp_path)
    with np.load(DATA / "digits_train.npz") as data:
        images = data["images"]
    with np.load(run.directory / "splits.npz") as saved:
        train_index = saved["train"]
    normalization = next(l for l in run.model.layers if isinstance(l, keras.layers.Normalization))
    mean = float(np.asarray(normalization.mean).ravel()[0])
    assert mean == pytest.approx(float(images[train_index].mean()), rel=1e-5)
    assert mean != pytest.approx(float(images.mean()), rel=1e-5)  # validation not seen

    with np.load(DATA / "digits_test.npz") as data:
        raw = data["images"][:20]
    expected = run.model.predict(raw, verbose=0)
    for name in ("model.keras", "model.h5"):
        loaded = keras.models.load_model(run.directory / name)
        np.testing.assert_allclose(loaded.predict(raw, verbose=0), expected, rtol=1e-5,
                                   atol=1e-6, err_msg=name)


def test_penguins_predict_takes_raw_csv_rows_and_reports_species(tmp_path: Path) -> None:
    from kexp.evaluation import evaluate
    from kexp.prediction import predict

    config = shipped("penguins_mlp.yaml", train={"epochs": 2}, callbacks=[],
                     output={"root": str(tmp_path / "experiments"), "formats": ["keras"]})
    run = train(config, tmp_path)
    columns = predict(run.directory, DATA / "penguins_test.csv")
    assert list(columns)[:3] == ["prob_Adelie", "prob_Chinstrap", "prob_Gentoo"]
    assert set(columns["predicted_label"]) <= {"Adelie", "Chinstrap", "Gentoo"}
    assert len(columns["predicted_label"]) == 69
    result = evaluate(run.directory, out=quiet())
    assert result["examples"] == 69
    assert result["metrics"]["accuracy"] == pytest.approx(run.test_metrics["accuracy"])


def test_augmentation_acts_in_training_only(tmp_path: Path) -> None:
    from kexp.tf import keras

    config = digits(tmp_path, {"augmentation": [{"RandomFlip": {"mode": "horizontal", "seed": 1}},
                                                {"RandomTranslation": {"height_factor": 0.3,
                                                                       "width_factor": 0.3}}]})
    config["output"]["formats"] = ["keras"]
    run = train(config, tmp_path)
    with np.load(DATA / "digits_test.npz") as data:
        raw = data["images"][:16]
    loaded = keras.models.load_model(run.directory / "model.keras")
    first = loaded.predict(raw, verbose=0)
    np.testing.assert_array_equal(first, loaded.predict(raw, verbose=0))
    np.testing.assert_allclose(first, np.asarray(loaded(raw, training=False)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(loaded(raw, training=True)), first, atol=1e-4)


def test_preprocessing_mistakes_are_config_errors(tmp_path: Path) -> None:
    penguins = shipped("penguins_mlp.yaml", output={"root": str(tmp_path / "e"), "formats": ["keras", "h5"]})
    with pytest.raises(ConfigError, match=r"output\.formats: the \.h5 format cannot hold"):
        train(penguins, tmp_path)
    penguins["output"]["formats"] = ["keras"]
    columns = penguins["data"]["preprocessing"]["columns"]
    columns["islnd"] = columns.pop("island")
    with pytest.raises(ConfigError) as caught:
        train(penguins, tmp_path)
    assert "data.preprocessing.columns.islnd: no feature column 'islnd'" in str(caught.value)
    assert "did you mean 'island'" in str(caught.value)
    columns["island"] = columns.pop("islnd")
    penguins["model"]["sequential"]["input"]["shape"] = [9]
    with pytest.raises(ConfigError, match=r"data\.preprocessing: the preprocessed features have "
                                          r"shape \(12\)"):
        train(penguins, tmp_path)
    wrong = digits(tmp_path, {"columns": {"x": [{"Normalization": {}}]}})
    with pytest.raises(ConfigError, match="the features are one array, not named columns"):
        train(wrong, tmp_path)
    assert not (tmp_path / "e").exists() and not (tmp_path / "experiments").exists()


def test_text_folder_with_text_vectorization_and_integer_ids(tmp_path: Path) -> None:
    """Strings adapted into a vocabulary (TextVectorization) and integer ids (IntegerLookup)."""
    from kexp.prediction import predict

    for label, words in {"neg": ["bad awful", "awful day", "bad bad"],
                         "pos": ["good day", "great good", "good fine"]}.items():
        (tmp_path / "texts" / label).mkdir(parents=True)
        for i, text in enumerate(words):
            (tmp_path / "texts" / label / f"{i}.txt").write_text(text)
    config = {
        "name": "texts", "seed": 1,
        "data": {"train": {"source": "text_dir", "path": str(tmp_path / "texts")},
                 "preprocessing": {"layers": [{"TextVectorization": {
                     "max_tokens": 20, "output_sequence_length": 3}}]},
                 "batch_size": 2},
        "model": {"sequential": {"input": {"shape": [3], "dtype": "int64"}, "layers": [
            {"Embedding": {"input_dim": 20, "output_dim": 4}}, {"GlobalAveragePooling1D": {}},
            {"Dense": {"units": 2, "activation": "softmax"}}]}},
        "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy"},
        "train": {"epochs": 1},
        "output": {"root": str(tmp_path / "runs"), "formats": ["keras"]},
    }
    run = train(config, tmp_path)
    vocabulary = next(l for l in run.model.layers if hasattr(l, "get_vocabulary")).get_vocabulary()
    assert {"bad", "good", "day"} <= set(vocabulary)
    columns = predict(run.directory, tmp_path / "texts")
    assert set(columns["predicted_label"]) <= {"neg", "pos"} and len(columns["prob_neg"]) == 6
    assert [Path(f).relative_to(tmp_path / "texts").as_posix() for f in columns["file"]] == [
        f"{label}/{i}.txt" for label in ("neg", "pos") for i in range(3)]  # as image folders

    table = tmp_path / "ids.csv"
    table.write_text("shop,amount,bought\n" + "".join(
        f"{[7, 42, 1000][i % 3]},{i},{i % 2}\n" for i in range(12)))
    config = {
        "name": "ids", "seed": 1,
        "data": {"train": {"source": "csv", "path": str(table), "label": "bought",
                           "column_types": {"shop": "integer"}},
                 "preprocessing": {"columns": {"shop": [{"IntegerLookup": {"output_mode": "one_hot"}}],
                                               "amount": [{"Normalization": {}}]}}},
        "model": {"sequential": {"input": {"shape": [5]}, "layers": [
            {"Dense": {"units": 1, "activation": "sigmoid"}}]}},
        "compile": {"optimizer": "adam", "loss": "binary_crossentropy"},
        "train": {"epochs": 1},
        "output": {"root": str(tmp_path / "runs"), "formats": ["keras"]},
    }
    run = train(config, tmp_path)
    columns = predict(run.directory, table)
    assert len(columns["probability"]) == 12
