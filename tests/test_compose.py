"""``extends`` and ``${env:VAR}``: the merge rules, cycles, paths relative to the file that
wrote them, and errors that point into the right file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import CONFIGS, REPO
from kexp.cli import app
from kexp.config import load_config, load_config_text
from kexp.config.compose import compose_file, merge
from kexp.config.interpolate import interpolate
from kexp.config.yaml_io import SourceMap, load_text
from kexp.errors import ConfigError

DATA = CONFIGS / "data"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def base_config(folder: Path) -> Path:
    """A complete config in ``folder`` with data paths relative to it (a copy of iris)."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for name in ("iris_train.csv", "iris_test.csv"):
        (folder / "data" / name).write_bytes((DATA / name).read_bytes())
    return write(folder / "base.yaml", (CONFIGS / "iris_mlp.yaml").read_text())


def merged(base: str, child: str):
    b, bw = load_text(base, "base.yaml")
    c, cw = load_text(child, "child.yaml")
    return merge(b, c, bw, cw), bw


# ---------------------------------------------------------------- merge rules

def test_maps_merge_and_scalars_replace() -> None:
    out, _ = merged("a: {x: 1, y: {p: 1, q: 2}}\nb: 1\n", "a: {y: {q: 3}, z: 4}\nb: 2\n")
    assert out == {"a": {"x": 1, "y": {"p": 1, "q": 3}, "z": 4}, "b": 2}


def test_lists_replace_unless_appended() -> None:
    out, _ = merged("l: [1, 2]\nm: [1]\n", "l: [3]\nm+: [2, 3]\n")
    assert out == {"l": [3], "m": [1, 2, 3]}


def test_keras_object_of_another_class_replaces_same_class_merges() -> None:
    base = "o: {Adam: {learning_rate: 0.1, beta_1: 0.8}}\np: {Adam: {learning_rate: 0.1}}\n"
    out, _ = merged(base, "o: {SGD: {momentum: 0.9}}\np: {Adam: {beta_1: 0.5}}\n")
    assert out["o"] == {"SGD": {"momentum": 0.9}}
    assert out["p"] == {"Adam": {"learning_rate": 0.1, "beta_1": 0.5}}


def test_per_output_maps_still_merge() -> None:
    out, _ = merged("loss: {digit: mse, parity: mae}\n", "loss: {parity: binary_crossentropy}\n")
    assert out["loss"] == {"digit": "mse", "parity": "binary_crossentropy"}


def test_null_replaces() -> None:
    out, _ = merged("data: {validation: {split: 0.2}, batch_size: 8}\n", "data: {validation: null}\n")
    assert out == {"data": {"validation": None, "batch_size": 8}}


def test_append_key_without_a_base_list_is_the_list() -> None:
    out, _ = merged("a: 1\n", "l+: [1]\nm: {n+: [2]}\n")
    assert out == {"a": 1, "l": [1], "m": {"n": [2]}}


def test_merged_locations_point_into_each_file() -> None:
    out, where = merged("a: {x: 1, l: [1, 2]}\n", "a:\n  y: 2\n  l+:\n    - 3\n")
    assert where.locate(("a", "x")) == ("base.yaml", 1)
    assert where.locate(("a", "y")) == ("child.yaml", 2)
    assert where.locate(("a", "l", 1)) == ("base.yaml", 1)
    assert where.locate(("a", "l", 2)) == ("child.yaml", 4)


def test_replaced_subtree_forgets_base_locations() -> None:
    _, where = merged("l:\n  - {a: 1}\n  - {b: 2}\n  - {c: 3}\n", "l: [x]\n")
    assert where.locate(("l", 2)) == ("child.yaml", 1)  # the list's line, not base's item 2


# ---------------------------------------------------------------- files

def test_extends_chain_with_relative_paths_and_appends(tmp_path: Path) -> None:
    base = base_config(tmp_path / "shared")
    write(tmp_path / "shared" / "middle.yaml",
          "extends: base.yaml\ntrain: {epochs: 3}\ncallbacks+: [TerminateOnNaN]\n")
    child = write(tmp_path / "exp" / "child.yaml",
                  "extends: [../shared/middle.yaml]\nname: child\n"
                  "compile:\n  optimizer: {SGD: {momentum: 0.9}}\n")
    loaded = load_config(child)
    config = loaded.config
    assert config.name == "child" and config.train.epochs == 3
    assert config.compile.optimizer == {"SGD": {"momentum": 0.9}}
    assert config.compile.loss == "sparse_categorical_crossentropy"  # from the base
    assert [next(iter(c)) if isinstance(c, dict) else c for c in config.callbacks] == [
        "EarlyStopping", "TerminateOnNaN"]
    # data paths are relative to the file that wrote them (the base), not the child
    assert config.data.train.path == str(tmp_path / "shared" / "data" / "iris_train.csv")
    assert loaded.bases == (str(base), str(tmp_path / "shared" / "middle.yaml"))
    assert "extends" not in loaded.to_dict()


def test_child_data_path_is_relative_to_the_child(tmp_path: Path) -> None:
    base_config(tmp_path / "shared")
    child = write(tmp_path / "exp" / "child.yaml",
                  "extends: ../shared/base.yaml\n"
                  "data:\n  test: {source: csv, path: mine.csv, label: species_id}\n")
    config = load_config(child).config
    assert config.data.test.path == str(tmp_path / "exp" / "mine.csv")
    assert config.data.train.path == str(tmp_path / "shared" / "data" / "iris_train.csv")


def test_a_later_base_wins(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "train: {epochs: 1}\nseed: 1\n")
    write(tmp_path / "b.yaml", "train: {epochs: 2}\n")
    raw, _, files = compose_file(write(tmp_path / "c.yaml", "extends: [a.yaml, b.yaml]\n"))
    assert raw == {"train": {"epochs": 2}, "seed": 1}
    assert [Path(f).name for f in files] == ["a.yaml", "b.yaml"]


def test_diamond_is_not_a_cycle(tmp_path: Path) -> None:
    write(tmp_path / "d.yaml", "seed: 1\n")
    write(tmp_path / "b.yaml", "extends: d.yaml\nname: b\n")
    write(tmp_path / "c.yaml", "extends: d.yaml\ndescription: c\n")
    raw, _, _ = compose_file(write(tmp_path / "a.yaml", "extends: [b.yaml, c.yaml]\n"))
    assert raw == {"seed": 1, "name": "b", "description": "c"}


def test_self_extends_is_a_cycle(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", "extends: a.yaml\nname: a\n")
    with pytest.raises(ConfigError, match=r"extends cycle: a.yaml -> a.yaml"):
        compose_file(path)


def test_extends_in_text_configs_is_relative_to_base_dir(tmp_path: Path) -> None:
    base_config(tmp_path)
    loaded = load_config_text("extends: base.yaml\nname: from-text\n", tmp_path)
    assert loaded.config.name == "from-text"
    assert loaded.config.data.train.path == str(tmp_path / "data" / "iris_train.csv")


def test_error_in_base_points_into_base(tmp_path: Path) -> None:
    base = base_config(tmp_path)
    base.write_text(base.read_text().replace("epochs: 60", "epochs: sixty"))
    child = write(tmp_path / "child.yaml", "extends: base.yaml\nname: child\n")
    (issue,) = pytest.raises(ConfigError, load_config, child).value.issues
    line = next(n for n, l in enumerate(base.read_text().splitlines(), 1) if "sixty" in l)
    assert (issue.file, issue.line, issue.path) == (str(base), line, ("train", "epochs"))


def test_child_fixes_a_base_mistake(tmp_path: Path) -> None:
    base = base_config(tmp_path)
    base.write_text(base.read_text().replace("epochs: 60", "epochs: sixty"))
    child = write(tmp_path / "child.yaml", "extends: base.yaml\ntrain: {epochs: 2}\n")
    assert load_config(child).config.train.epochs == 2


def test_print_config_is_fully_resolved(tmp_path: Path) -> None:
    base_config(tmp_path)
    child = write(tmp_path / "child.yaml", "extends: base.yaml\nname: child\n")
    result = CliRunner().invoke(app, ["train", str(child), "--print-config",
                                      "--set", "seed=5"])
    assert result.exit_code == 0, result.output
    assert f"# extends: {tmp_path / 'base.yaml'}" in result.output
    config = yaml.safe_load(result.output)
    assert config["name"] == "child" and config["seed"] == 5
    assert "extends" not in config
    assert config["train"]["steps_per_epoch"] is None  # defaults are shown
    assert load_config_text(result.output).config.name == "child"  # and it loads as is


# ---------------------------------------------------------------- ${env:VAR}

def test_env_whole_values_are_typed_and_partial_values_pasted() -> None:
    data, where = load_text("a: ${env:N}\nb: x/${env:P}/y\nc: ${env:U,7}\nd: $${env:N}\n")
    out = interpolate(data, where, {"N": "5", "P": "data"})
    assert out == {"a": 5, "b": "x/data/y", "c": 7, "d": "${env:N}"}


def test_every_unset_variable_is_reported_with_its_line() -> None:
    data, where = load_text("a: ${env:X1}\nb:\n  c: ${env:X2}\n", "f.yaml")
    with pytest.raises(ConfigError) as info:
        interpolate(data, where, {})
    assert [(i.path, i.line) for i in info.value.issues] == [(("a",), 1), (("b", "c"), 3)]


def test_env_in_extends_paths(tmp_path: Path, monkeypatch) -> None:
    base_config(tmp_path / "shared")
    monkeypatch.setenv("KEXP_TEST_SHARED", str(tmp_path / "shared"))
    child = write(tmp_path / "c.yaml", "extends: ${env:KEXP_TEST_SHARED}/base.yaml\n")
    assert load_config(child).config.name == "iris-mlp"


def test_keys_are_not_interpolated() -> None:
    data, where = load_text("${env:K}: 1\n")
    assert interpolate(data, where, {"K": "x"}) == {"${env:K}": 1}


def test_source_map_move_and_drop() -> None:
    where = SourceMap()
    where.record(("l", 0), "f", 1)
    where.record(("l", 0, "a"), "f", 2)
    where.move(("l", 0), ("l", 1))
    assert ("l", 0) not in where and where.locate(("l", 1, "a")) == ("f", 2)
    where.drop(("l",))
    assert where.items() == []


def test_the_readme_example_composes_as_described(tmp_path: Path, monkeypatch) -> None:
    """The `extends` example in README.md, next to a copy of the shipped digits config."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("# configs/digits_small.yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "digits_cnn.yaml").write_text((CONFIGS / "digits_cnn.yaml").read_text())
    child = write(tmp_path / "digits_small.yaml", block)
    monkeypatch.delenv("RUNS_DIR", raising=False)
    config = load_config(child).config
    assert config.name == "digits-small" and config.train.epochs == 5
    assert config.train.terminate_on_nan is True  # inherited default of the merged map
    assert config.compile.optimizer == {"SGD": {"momentum": 0.9}}
    assert [next(iter(c)) for c in config.callbacks] == [
        "EarlyStopping", "ReduceLROnPlateau", "TerminateOnNaN"]
    assert config.output.root == "experiments"
    assert config.data.train.path == str(tmp_path / "data" / "digits_train.npz")
    monkeypatch.setenv("RUNS_DIR", "/tmp/runs")
    assert load_config(child).config.output.root == "/tmp/runs"
