"""Plain YAML scalars are typed as YAML 1.2's core schema types them, not as PyYAML's YAML 1.1:
``yes``/``on`` are text, ``010`` is ten, ``1:30`` is text, ``3e-4`` is a number; in a config
file, in ``--set`` values, and in what kexp writes back (``config.yaml`` of a run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import CONFIGS, assert_user_error, cli
from kexp.config.yaml_io import dump, load_text


@pytest.mark.parametrize("text, value", [
    ("true", True), ("False", False), ("010", 10), ("-7", -7), ("1_000", 1000),
    ("0x10", 16), ("0o17", 15), ("3e-4", 3e-4), ("1e3", 1000.0), ("1.5", 1.5), (".5", 0.5),
    ("-.inf", float("-inf")), ("~", None), ("null", None),
    # YAML 1.1 read these as True, False, True, False, 90, 8 (octal) and a date
    ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("1:30", "1:30"),
    ("0b101", "0b101"), ("2024-01-01", "2024-01-01"),
])
def test_scalars_are_read_as_yaml_1_2_core_types_them(text: str, value: Any) -> None:
    read = load_text(f"key: {text}\n")[0]["key"]
    assert read == value and type(read) is type(value)


def test_what_kexp_writes_reads_back_the_same() -> None:
    """Strings that look like another type are quoted when written (a run's config.yaml)."""
    data = {"a": "3e-4", "b": "yes", "c": "010", "d": 3e-4, "e": True, "f": "2024-01-01",
            "g": 10, "h": [1, "on", None], "i": "1_000"}
    assert load_text(dump(data))[0] == data


def test_a_yaml_1_1_boolean_is_refused_with_what_to_write(tmp_path: Path) -> None:
    text = (CONFIGS / "iris_mlp.yaml").read_text().replace("  batch_size: 16",
                                                          "  batch_size: 16\n  shuffle: no")
    config = tmp_path / "c.yaml"
    config.write_text(text)
    line = text.splitlines().index("  shuffle: no") + 1
    assert_user_error(cli(["validate", config]),
                      f"c.yaml:{line}: data.shuffle: expected true or false; kexp reads YAML "
                      "1.2, where 'no' is text, not a boolean: write false")


def test_set_values_are_typed_the_same_way() -> None:
    done = cli(["validate", CONFIGS / "iris_mlp.yaml", "--set", "data.shuffle=on"])
    assert_user_error(done, "--set data.shuffle=on: data.shuffle: expected true or false",
                      "write true")
    done = cli(["train", CONFIGS / "iris_mlp.yaml", "--set", "train.epochs=010",
                "--print-config"])
    assert done.returncode == 0, done.stderr
    assert "epochs: 10\n" in done.stdout


def _bomb(levels: int) -> str:
    """Nested aliases: each level ten of the one before ("billion laughs")."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, says", [
    (_bomb(9), "holds more than 100,000 values once its aliases (*name) are expanded"),
    ("a: &a [1, *a]\n", "refers to a value that contains it"),
    ("a: " + "[" * 150 + "]" * 150 + "\n", "nests more than 100 levels deep"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nests too deeply to be read"),
])
def test_a_yaml_that_would_hang_or_overflow_is_refused_at_once(tmp_path: Path, text: str,
                                                              says: str) -> None:
    """Was: validate hung on nested aliases and on a self-referring alias, and a deep nesting
    ended in a RecursionError traceback."""
    config = tmp_path / "c.yaml"
    config.write_text(text)
    assert_user_error(cli(["validate", config], timeout=60), says)


def test_shared_aliases_within_the_limits_still_read() -> None:
    data = load_text(_bomb(4) + "b: {c: *l1}\n")[0]
    assert len(data["l3"]) == 10 and data["b"]["c"] == [["x"] * 10] * 10
