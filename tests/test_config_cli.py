"""``kexp schema``, the generated reference page, ``kexp init`` and a fast ``kexp --help``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from conftest import CONFIGS, REPO
from kexp.cli import app
from kexp.config import load_config
from kexp.config.reference import reference_markdown
from kexp.starter import DATA_FILES, SCHEMA_FILE

REFERENCE = REPO / "docs" / "config-reference.md"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


# ---------------------------------------------------------------- JSON Schema

@pytest.mark.parametrize("config", SHIPPED + [REPO / "kexp/starter/sequential.yaml",
                                             REPO / "kexp/starter/functional.yaml"],
                         ids=lambda p: p.name)
def test_good_configs_pass_the_json_schema(validator, config: Path) -> None:
    assert list(validator.iter_errors(yaml.safe_load(config.read_text()))) == []


@pytest.mark.parametrize("mutate, word", [
    (lambda c: c["train"].update(epoch=3), "epoch"),
    (lambda c: c.update(trian={}), "trian"),
    (lambda c: c["hardware"].update(accelerator="gpus") if "hardware" in c
     else c.update(hardware={"accelerator": "gpus"}), "gpus"),
    (lambda c: c["compile"].update(optimizer={"Adam": {}, "SGD": {}}), "optimizer"),
])
def test_the_json_schema_rejects_what_validate_rejects(validator, mutate, word: str) -> None:
    config = yaml.safe_load((CONFIGS / "digits_cnn.yaml").read_text())
    mutate(config)
    errors = list(validator.iter_errors(config))
    assert errors and any(word in (e.message + str(list(e.path))) for e in errors)


def test_the_json_schema_knows_extends_and_appends(validator) -> None:
    child = {"extends": ["base.yaml"], "callbacks+": [{"TerminateOnNaN": {}}],
             "model": {"sequential": {"layers+": ["Flatten"], "input": {"shape": [3]}}}}

    def every(errors):  # with the errors of each union branch
        for error in errors:
            yield error
            yield from every(error.context)

    unknown = [e for e in every(validator.iter_errors(child))
               if e.validator == "additionalProperties"]
    assert unknown == [], [e.message for e in unknown]
    # but `key` (replace) and `key+` (append) together is a mistake, as kexp says
    child["callbacks"] = []
    assert any(list(e.path) == [] and "callbacks" in str(e.instance)
               for e in validator.iter_errors(child))


# What a JSON Schema cannot say, so an editor cannot flag it (kexp validate does).
NOT_EXPRESSIBLE = {
    "data_fractions_sum": "arithmetic across keys (validation + test fractions < 1)",
    "env_var_shell_style": "depends on the environment",
    "env_var_unset": "depends on the environment",
    "plugins_file_missing": "depends on the file system",
    "train_class_weight_infinite": "JSON has no infinity (YAML's .inf is one)",
    "yaml_duplicate_flow_key": "the YAML parser keeps one of the duplicates",
    "yaml_duplicate_nested_key": "the YAML parser keeps one of the duplicates",
    "yaml_duplicate_top_key": "the YAML parser keeps one of the duplicates",
}


def _schema_cases() -> list[Path]:
    """Bad-config cases an editor sees whole: schema-level (Keras names are free-form in the
    JSON Schema), one file (no extends), no --set, readable YAML."""
    from test_bad_configs import CASES, expected

    out = []
    for case in CASES:
        want = expected(case)
        if want.keras or want.args:
            continue
        try:
            data = yaml.safe_load(case.read_text())
        except yaml.YAMLError:
            continue
        if isinstance(data, dict) and "extends" not in data:
            out.append(case)
    return out


@pytest.mark.parametrize("case", _schema_cases(), ids=lambda p: p.stem)
def test_the_json_schema_rejects_every_bad_config_it_can_express(validator, case: Path) -> None:
    """The bad-config corpus against the JSON Schema: each mistake the schema can express
    is an error there too, at the key path kexp names or above it (exactly one model kind,
    one kind per graph node, names, class_weight keys, ``k`` with ``k+``, ...)."""
    from test_bad_configs import expected

    # as an editor sees it: JSON, whose mapping keys are text (class_weight's `-1:` too)
    errors = list(validator.iter_errors(json.loads(json.dumps(yaml.safe_load(case.read_text())))))
    if case.stem in NOT_EXPRESSIBLE:  # keep the list honest: these do pass
        assert errors == [], (case.stem, [e.message for e in errors])
        return
    want = [p for p in re.split(r"\.|\[(-?\d+)\]", expected(case).path) if p]
    want = [int(p) if p.lstrip("-").isdigit() else p for p in want]
    assert any(list(e.absolute_path) == want[: len(e.absolute_path)] for e in errors), (
        case.stem, [(list(e.absolute_path), e.message) for e in errors])


def test_schema_output_replaces_only_generated_files(tmp_path: Path) -> None:
    target = tmp_path / "kexp.schema.json"
    assert CliRunner().invoke(app, ["schema", "-o", str(target)]).exit_code == 0
    assert json.loads(target.read_text())["title"] == "kexp experiment config"
    assert CliRunner().invoke(app, ["schema", "-o", str(target)]).exit_code == 0  # regenerate
    mine = tmp_path / "mine.json"
    mine.write_text('{"title": "my own"}')
    result = CliRunner().invoke(app, ["schema", "-o", str(mine)])
    assert result.exit_code == 2 and "never overwrites" in result.output
    assert mine.read_text() == '{"title": "my own"}'
    # the name says the format (was: markdown written over the editors' kexp.schema.json)
    result = CliRunner().invoke(app, ["schema", "--format", "markdown", "-o", str(target)])
    assert result.exit_code == 2
    assert "--format markdown writes a file whose name ends in .md or .markdown, or give " \
        "--format json" in " ".join(result.output.split())
    assert json.loads(target.read_text())["title"] == "kexp experiment config"
    result = CliRunner().invoke(app, ["schema", "-o", str(tmp_path / "schema.yaml")])
    assert result.exit_code == 2 and "ends in .json" in result.output
    fifo = tmp_path / "pipe.json"  # was: read to see whether kexp wrote it, and hung
    os.mkfifo(fifo)
    result = CliRunner().invoke(app, ["schema", "-o", str(fifo)])
    assert result.exit_code == 2 and "already exists" in result.output
    page = tmp_path / "reference.md"
    assert CliRunner().invoke(app, ["schema", "--format", "markdown", "-o", str(page)]).exit_code == 0


def test_unknown_format_suggests() -> None:
    result = CliRunner().invoke(app, ["schema", "--format", "markdwn"])
    assert result.exit_code == 2 and "did you mean 'markdown'" in result.output


# ---------------------------------------------------------------- reference page

def test_committed_reference_page_is_current() -> None:
    assert REFERENCE.read_text() == reference_markdown(), (
        "docs/config-reference.md is stale (the schema changed): regenerate it with\n"
        "    kexp schema --format markdown -o docs/config-reference.md"
    )


def test_reference_page_lists_every_default() -> None:
    page = reference_markdown()
    assert "| `epochs` | integer | `10` |" in page
    assert "| `batch_size` | integer | `32` |" in page
    assert "| `optimizer` | Keras object | `\"adam\"` |" in page
    assert "At `data.train`" in page or "`data.train`" in page
    for section in ("DataSection", "ModelSection", "CompileSection", "TrainSection"):
        assert f"## {section}" in page


# ---------------------------------------------------------------- kexp init

@pytest.mark.parametrize("functional", [False, True], ids=["sequential", "functional"])
def test_init_writes_a_starter_that_validates_and_trains_as_is(tmp_path: Path,
                                                               functional: bool) -> None:
    path = tmp_path / "exp.yaml"
    args = ["init", str(path)] + (["--functional"] if functional else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = path.read_text()
    assert text.startswith(f"# yaml-language-server: $schema={SCHEMA_FILE}\n")
    assert "kexp train exp.yaml" in text  # the comments name the file written
    assert ("functional:" in text) is functional
    for name in (*DATA_FILES, SCHEMA_FILE):
        assert (tmp_path / name).is_file()

    validated = CliRunner().invoke(app, ["validate", str(path)])
    assert validated.exit_code == 0, validated.output
    trained = CliRunner().invoke(app, ["train", str(path), "--output-root",
                                       str(tmp_path / "runs")])
    assert trained.exit_code == 0, trained.output
    (run,) = [p for p in (tmp_path / "runs").glob("*/*") if p.is_dir()]
    assert not (run / "overrides.yaml").exists()  # written only when --set was given
    accuracy = json.loads((run / "evaluation.json").read_text())["metrics"]["accuracy"]
    assert accuracy > 0.8, accuracy  # it learns iris, not just runs


def test_init_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "kexp.yaml"
    path.write_text("mine: true\n")
    result = CliRunner().invoke(app, ["init", str(path)])
    assert result.exit_code == 2 and "already exists" in result.output
    assert path.read_text() == "mine: true\n"

    other = tmp_path / "other" / "kexp.yaml"
    (tmp_path / "other" / "data").mkdir(parents=True)
    (tmp_path / "other" / "data" / "iris_train.csv").write_text("my,own\n1,2\n")
    result = CliRunner().invoke(app, ["init", str(other)])
    assert result.exit_code == 2 and "iris_train.csv exists" in result.output
    assert not other.exists()  # nothing written when anything would be overwritten
    assert (tmp_path / "other" / "data" / "iris_train.csv").read_text() == "my,own\n1,2\n"


def test_init_keeps_identical_data_and_an_existing_schema(tmp_path: Path) -> None:
    assert CliRunner().invoke(app, ["init", str(tmp_path / "a.yaml")]).exit_code == 0
    schema = tmp_path / SCHEMA_FILE
    schema.write_text("{}")  # the user's (or an older) schema stays
    result = CliRunner().invoke(app, ["init", str(tmp_path / "b.yaml"), "--functional"])
    assert result.exit_code == 0, result.output
    assert "kept" in result.output and schema.read_text() == "{}"
    assert load_config(tmp_path / "b.yaml").config.model.functional is not None


# ---------------------------------------------------------------- a fast --help

_HELP_SCRIPT = """
import sys
from typer.testing import CliRunner
from kexp.cli import app
result = CliRunner().invoke(app, ["--help"])
assert result.exit_code == 0, result.output
print(result.output)
heavy = [m for m in ("tensorflow", "keras", "numpy", "pydantic", "rich.markdown", "rich.console")
         if m in sys.modules]
print("heavy:", heavy)
"""


def test_help_imports_nothing_heavy() -> None:
    done = subprocess.run([sys.executable, "-c", _HELP_SCRIPT], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "heavy: []" in done.stdout, done.stdout
    for command in ("train", "validate", "schema", "init"):
        assert command in done.stdout
