"""The schema: shipped configs validate; structural mistakes are reported with key path,
line and a suggestion, all at once, without importing TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import CONFIGS
from kexp.config import load_config, load_config_text
from kexp.errors import ConfigError

GOOD = """\
name: t
data:
  train: {source: npz, path: a.npz, x: images, y: labels}
  validation: {split: 0.2}
model:
  sequential:
    input: {shape: [8, 8, 1]}
    layers:
      - Flatten: {}
      - Dense: {units: 10, activation: softmax}
compile:
  loss: sparse_categorical_crossentropy
"""


def problems(text: str) -> list:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    return caught.value.issues


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_validate(name: str) -> None:
    assert load_config(CONFIGS / name).config.name


def test_data_paths_are_relative_to_the_config_file() -> None:
    config = load_config(CONFIGS / "digits_cnn.yaml").config
    assert config.data.train.path == str(CONFIGS / "data" / "digits_train.npz")


def test_defaults_are_filled_in() -> None:
    config = load_config_text(GOOD).config
    assert config.data.batch_size == 32
    assert config.compile.optimizer == "adam"
    assert config.output.formats == ["keras", "h5"]
    assert config.hardware.accelerator == "auto"


def test_unknown_key_names_path_line_and_suggestion() -> None:
    (issue,) = problems(GOOD.replace("compile:\n", "compile:\n  metrcs: [accuracy]\n"))
    assert issue.path == ("compile", "metrcs")
    assert issue.line == 12
    assert issue.suggestion == "metrics"
    assert "unknown key" in str(issue)


def test_every_error_is_reported_at_once() -> None:
    text = GOOD.replace("name: t", "name: t\nseed: -1").replace(
        "  validation: {split: 0.2}", "  validation: {split: 1.5}\n  batch_size: many"
    )
    paths = {i.path for i in problems(text)}
    assert paths == {("seed",), ("data", "validation", "split"), ("data", "batch_size")}


def test_wrong_type_shows_value() -> None:
    (issue,) = problems(GOOD.replace("  loss: sparse", "  optimizer: 3\n  loss: sparse"))
    assert issue.path == ("compile", "optimizer")
    assert "got 3" in str(issue)


def test_missing_required_section() -> None:
    text = GOOD.split("compile:")[0]
    (issue,) = problems(text)
    assert issue.path == ("compile",)
    assert "missing" in issue.message


def test_choice_with_suggestion() -> None:
    (issue,) = problems(GOOD + "hardware: {accelerator: gpuu}\n")
    assert issue.path == ("hardware", "accelerator")
    assert issue.suggestion == "gpu"


def test_unknown_source_kind() -> None:
    (issue,) = problems(GOOD.replace("source: npz", "source: npzz"))
    assert issue.path == ("data", "train", "source")
    assert issue.suggestion == "npz"
    assert "(got 'npzz')" in str(issue)


def _value_at(data: object, path: tuple) -> tuple[bool, object]:
    for part in path:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return False, None
    return True, data


def test_every_schema_issue_about_a_written_value_shows_the_value() -> None:
    """Whatever the kind of error (a type, a choice, a bound, a source kind, a validator),
    an issue about a value the config wrote shows it: the whole bad-config corpus."""
    from pydantic import ValidationError

    from kexp.config.compose import compose_file
    from kexp.config.schema import ExperimentConfig
    from kexp.config.validation import issues_from

    checked = 0
    for case in sorted((CONFIGS.parent / "tests" / "bad_configs").glob("*.yaml")):
        try:
            raw, where, _ = compose_file(case)
            ExperimentConfig.model_validate(raw)
            continue
        except (ConfigError, ValidationError) as exc:
            if isinstance(exc, ConfigError):
                continue  # found before the schema (YAML, extends, variables)
            issues = issues_from(exc, raw, where, ExperimentConfig)
        for issue in issues:
            found, value = _value_at(raw, issue.path)
            if not found or isinstance(value, dict) or issue.message.startswith(
                    ("unknown key", "required key")):
                continue  # about a key, or a mapping's keys: nothing to echo
            checked += 1
            assert issue.has_value or repr(value) in issue.message, (case.name, str(issue))
    assert checked >= 50


def test_layer_spec_must_have_one_key() -> None:
    (issue,) = problems(GOOD.replace("- Flatten: {}", "- {Flatten: {}, Dense: {units: 2}}"))
    assert issue.path == ("model", "sequential", "layers", 0)
    assert "exactly one key" in issue.message


def test_yaml_syntax_error_has_line() -> None:
    (issue,) = problems(GOOD.replace("  loss: sparse", "  loss: [sparse"))
    assert "YAML syntax error" in issue.message
    assert issue.line is not None


def test_duplicate_keys_are_refused() -> None:
    (issue,) = problems(GOOD + "compile:\n  loss: mse\n")
    assert issue.path == ("compile",)
    assert "duplicate key" in issue.message


def test_python_tags_are_refused() -> None:
    (issue,) = problems(GOOD.replace("name: t", "name: !!python/object/apply:os.getcwd []"))
    assert "Python tags are refused" in issue.message


def test_fractions_must_leave_training_data() -> None:
    text = GOOD.replace("{split: 0.2}", "{split: 0.6}\n  test: {split: 0.5}")
    (issue,) = problems(text)
    assert "nothing left to train on" in issue.message


def test_schema_checks_do_not_import_tensorflow(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("batch_size", "x") + "train: {epochz: 1}\n")
    code = (
        "import sys\nfrom kexp.config import load_config\n"
        f"try:\n    load_config({str(bad)!r})\nexcept Exception as e:\n    print(e)\n"
        "print('tensorflow' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "train.epochz" in done.stdout
    assert done.stdout.strip().endswith("False")


def test_a_name_too_long_for_a_folder_is_refused_at_name() -> None:
    """Was: valid, then 'File name too long' when the run directory was made."""
    text = (CONFIGS / "iris_mlp.yaml").read_text().replace("name: iris-mlp", "name: " + "a" * 300)
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, CONFIGS)
    (issue,) = caught.value.issues
    assert issue.path == ("name",) and "at most 100 characters" in issue.message
    assert issue.line == 2


def test_a_negative_input_dimension_is_refused_at_its_index() -> None:
    """Was: 'Negative dimensions are not allowed' traceback from building the Sequential."""
    text = (CONFIGS / "iris_mlp.yaml").read_text().replace("input: {shape: [4]}",
                                                           "input: {shape: [-1]}")
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, CONFIGS)
    (issue,) = caught.value.issues
    assert issue.path == ("model", "sequential", "input", "shape", 0)
    assert "greater than 0" in issue.message
