"""``--set`` overrides: the syntax, what may be changed, where errors point, and the run
directory's record of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import CONFIGS
from kexp.cli import app
from kexp.config import load_config
from kexp.config.overrides import apply_overrides, parse_override
from kexp.config.schema import ExperimentConfig
from kexp.config.yaml_io import load_text
from kexp.errors import ConfigError

DIGITS = CONFIGS / "digits_cnn.yaml"
IRIS = CONFIGS / "iris_mlp.yaml"


def loaded(*sets: str, config: Path = DIGITS):
    return load_config(config, sets)


def error(*sets: str, config: Path = DIGITS) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(config, sets)
    return info.value


# ---------------------------------------------------------------- values and syntax

@pytest.mark.parametrize("text, value", [
    ("5", 5), ("3e-4", 3e-4), ("1e3", 1000.0), ("-2", -2), ("0.5", 0.5), ("true", True),
    ("null", None), ("", None), ("adam", "adam"), ("'5'", "5"), ("[a, 2]", ["a", 2]),
    ("{EarlyStopping: {patience: 3}}", {"EarlyStopping": {"patience": 3}}),
    ("a=b", "a=b"),  # only the first '=' separates key and value
])
def test_values_are_yaml(text: str, value: object) -> None:
    assert parse_override(f"x.y={text}").value == value


@pytest.mark.parametrize("text, op, path", [
    ("train.epochs=5", "set", ("train", "epochs")),
    ("model.sequential.layers[2].Conv2D.filters=8", "set",
     ("model", "sequential", "layers", 2, "Conv2D", "filters")),
    ("callbacks[-1].X.y=1", "set", ("callbacks", -1, "X", "y")),
    ("+callbacks[]=TerminateOnNaN", "add", ("callbacks", None)),
    ("+callbacks[1]=TerminateOnNaN", "add", ("callbacks", 1)),
    ("~callbacks[0]", "remove", ("callbacks", 0)),
    ("  ~ data.validation ", "remove", ("data", "validation")),
])
def test_syntax(text: str, op: str, path: tuple) -> None:
    parsed = parse_override(text)
    assert (parsed.op, parsed.path) == (op, path)


@pytest.mark.parametrize("text, gist", [
    ("train.epochs", "missing '=value'"),
    ("=5", "expected key.path=value"),
    ("train..epochs=5", "expected key.path=value"),
    ("train.epochs[=5", "expected key.path=value"),
    ("callbacks[]=X", "only allowed last, in an add"),
    ("+callbacks[].X=1", "only allowed last"),
    ("~train.epochs=5", "a removal takes no value"),
    ("train.epochs=[1", "value: YAML syntax error"),
    ("train.epochs={a: 1, a: 2}", "duplicate key"),
    ("+extends=other.yaml", "extends cannot be set with --set"),
    ("train.epochs=${env:KEXP_SURELY_UNSET_FOR_TESTS}", "is not set"),
])
def test_malformed_overrides_are_user_errors(text: str, gist: str) -> None:
    exc = error(text)
    assert gist in str(exc)
    assert f"--set {text}" in str(exc)
    assert "--set syntax" in (exc.hint or "")


def test_env_in_override_values(monkeypatch) -> None:
    monkeypatch.setenv("KEXP_TEST_EPOCHS", "4")
    assert loaded("train.epochs=${env:KEXP_TEST_EPOCHS}").config.train.epochs == 4


# ---------------------------------------------------------------- what may be set

def test_set_existing_keys_and_schema_defaults() -> None:
    config = loaded(
        "train.epochs=5",                                   # written in the file
        "compile.optimizer.Adam.learning_rate=3e-4",       # a Keras kwarg in the file
        "data.shuffle=false",                               # a schema default, not written
        "hardware.accelerator=cpu",                         # a whole default section
        "model.sequential.layers[1].Conv2D.filters=8",
        "callbacks[-1].ReduceLROnPlateau.patience=1",
    ).config
    assert config.train.epochs == 5
    assert config.compile.optimizer == {"Adam": {"learning_rate": 3e-4}}
    assert config.data.shuffle is False
    assert config.hardware.accelerator == "cpu"
    assert config.model.sequential.layers[1]["Conv2D"]["filters"] == 8
    assert config.callbacks[-1]["ReduceLROnPlateau"]["patience"] == 1


def test_unknown_key_names_the_nearest_valid_one() -> None:
    exc = error("train.epoch=5")
    (issue,) = exc.issues
    assert issue.path == ("train", "epoch")
    assert issue.suggestion == "train.epochs"
    assert issue.file == "--set train.epoch=5"
    assert "+train.epoch=" not in issue.message  # a section of the schema: "+" would fail too


def test_unknown_section_suggests_the_whole_path() -> None:
    (issue,) = error("trian.epochs=5").issues
    assert issue.suggestion == "train.epochs"


def test_unknown_kwarg_suggests_the_written_one() -> None:
    (issue,) = error("compile.optimizer.Adam.learning_rat=0.1").issues
    assert issue.suggestion == "compile.optimizer.Adam.learning_rate"


def test_a_free_form_key_is_added_with_plus() -> None:
    config = loaded("+compile.optimizer.Adam.weight_decay=0.01").config
    assert config.compile.optimizer["Adam"] == {"learning_rate": 0.003, "weight_decay": 0.01}


def test_plus_on_an_existing_key_is_an_error() -> None:
    (issue,) = error("+train.epochs=3").issues
    assert "already set" in issue.message


def test_added_unknown_key_is_caught_by_the_schema_at_the_override() -> None:
    (issue,) = error("+train.epoch=3").issues
    assert issue.path == ("train", "epoch") and issue.suggestion == "epochs"
    assert str(issue).startswith("--set +train.epoch=3: train.epoch: unknown key")


def test_schema_errors_from_an_override_name_the_override() -> None:
    (issue,) = error("train.epochs=ten").issues
    assert str(issue) == "--set train.epochs=ten: train.epochs: expected an integer (got 'ten')"


def test_every_bad_override_is_reported_at_once() -> None:
    exc = error("train.epoch=1", "data.batchsize=3", "callbacks[9].X.y=1")
    assert [i.path for i in exc.issues] == [
        ("train", "epoch"), ("data", "batchsize"), ("callbacks", 9)]


def test_removing_a_required_key_is_blamed_on_the_override() -> None:
    """``~name`` leaves ``name`` missing: the override did it, not line 2 of the file."""
    exc = error("~name", "~data.train.path", config=IRIS)
    assert [str(i) for i in exc.issues] == [
        "--set ~name: name: required key is missing",
        "--set ~data.train.path: data.train.path: required key is missing",
    ]


def test_a_bad_override_does_not_hide_the_config_s_other_mistakes(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(IRIS.read_text().replace("train: {epochs: 60}", "train: {epochs: sixty}")
                      .replace("path: data/", f"path: {IRIS.parent}/data/"))
    exc = error("train.epoch=1", "compile.optimizer.Adam.learning_rate=0.1", config=config)
    assert [(i.path, i.file) for i in exc.issues] == [
        (("train", "epoch"), "--set train.epoch=1"), (("train", "epochs"), str(config))]
    assert exc.hint and "--set syntax" in exc.hint


# ---------------------------------------------------------------- lists

def test_append_insert_and_remove_list_items() -> None:
    config = loaded(
        "+callbacks[]={TerminateOnNaN: {}}",        # [ES, RLR, T]
        "+callbacks[0]={CSVLogger: {filename: h.csv}}",  # [CSV, ES, RLR, T]
        "~callbacks[1]",                            # [CSV, RLR, T]
        "~model.sequential.layers[-2]",             # drop the Dropout
        "+model.sequential.layers[-1]=Flatten",     # insert before the last
    ).config
    assert [next(iter(c)) for c in config.callbacks] == [
        "CSVLogger", "ReduceLROnPlateau", "TerminateOnNaN"]
    names = [layer if isinstance(layer, str) else next(iter(layer))
             for layer in config.model.sequential.layers]
    assert names[-3:] == ["GlobalAveragePooling2D", "Flatten", "Dense"]
    assert "Dropout" not in names


def test_append_creates_a_list_the_config_does_not_have() -> None:
    text = IRIS.read_text().split("callbacks:")[0]
    raw, where = load_text(text, "c.yaml")
    out = apply_overrides(raw, where, ["+callbacks[]=TerminateOnNaN"], ExperimentConfig)
    assert out["callbacks"] == ["TerminateOnNaN"]
    assert raw.get("callbacks") is None  # the input is not modified


@pytest.mark.parametrize("text, gist", [
    ("callbacks[5].X.y=1", "no item [5]: callbacks has 2 items"),
    ("~callbacks[2]", "no item [2]"),
    ("+callbacks[3]=X", "no item [3]"),
    ("callbacks.EarlyStopping=1", "is a list: index it as callbacks[0]"),
    ("train[0]=1", "is a mapping, not a list"),
    ("name.first=x", "is a string, not a mapping or list"),
    ("~data.nothing", "the config has no key 'nothing'"),
    ("~train.steps_per_epoch", "nothing to remove"),
])
def test_list_and_structure_mistakes(text: str, gist: str) -> None:
    assert gist in str(error(text))


def test_locations_follow_items_that_moved() -> None:
    """After an insert or a removal, file items keep their own lines; new ones name --set."""
    lines = DIGITS.read_text().splitlines()
    early = next(n for n, line in enumerate(lines, 1) if "EarlyStopping" in line)
    reduce = next(n for n, line in enumerate(lines, 1) if "ReduceLROnPlateau" in line)
    inserted = loaded("+callbacks[0]=TerminateOnNaN")
    assert inserted.locate(("callbacks", 0)) == ("--set +callbacks[0]=TerminateOnNaN", None)
    assert inserted.locate(("callbacks", 1, "EarlyStopping"))[1] == early
    assert inserted.locate(("callbacks", 2, "ReduceLROnPlateau"))[1] == reduce
    removed = loaded("~callbacks[0]")
    assert removed.locate(("callbacks", 0, "ReduceLROnPlateau"))[1] == reduce


def test_keras_level_error_in_an_overridden_value_names_the_override() -> None:
    result = CliRunner().invoke(app, ["validate", str(IRIS), "--set",
                                      "model.sequential.layers[0].Dense.units=-3"])
    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.output.splitlines() if "units" in line]
    assert "iris_mlp.yaml:" in line and ": model.sequential.layers[0].Dense: " in line
    assert line.endswith("(changed by --set model.sequential.layers[0].Dense.units=-3)")


# ---------------------------------------------------------------- the CLI and the run directory

def test_print_config_shows_overrides_and_defaults() -> None:
    result = CliRunner().invoke(app, ["train", str(IRIS), "--print-config",
                                      "--set", "train.epochs=3", "--set", "data.shuffle=false"])
    assert result.exit_code == 0, result.output
    head, _, body = result.output.partition("\nname:")
    assert "# --set train.epochs=3" in head and "# --set data.shuffle=false" in head
    config = yaml.safe_load("name:" + body)
    assert config["train"]["epochs"] == 3 and config["data"]["shuffle"] is False
    assert config["hardware"]["accelerator"] == "auto"  # a default, shown
    assert config["data"]["train"]["path"] == str(CONFIGS / "data" / "iris_train.csv")


def test_bad_override_on_train_exits_2_without_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", str(IRIS), "--output-root", str(tmp_path),
                                      "--set", "train.epoch=1"])
    assert result.exit_code == 2
    assert "did you mean 'train.epochs'" in result.output
    assert not any(tmp_path.iterdir())
    # '+' cannot add a key to a section of the schema, so it is not suggested (it was)
    assert "+train.epoch" not in result.output


def test_adding_a_key_is_suggested_only_where_keys_are_free() -> None:
    result = CliRunner().invoke(app, ["validate", str(IRIS), "--set",
                                      "compile.optimizer.Adam.beta_1=0.8"])
    assert result.exit_code == 2
    assert "to add it anyway write +compile.optimizer.Adam.beta_1=..." in result.output
    result = CliRunner().invoke(app, ["validate", str(IRIS), "--set",
                                      "+compile.optimizer.Adam.beta_1=0.8"])
    assert result.exit_code == 0, result.output


_NO_TF = """
import json, sys
from typer.testing import CliRunner
from kexp.cli import app
results = [CliRunner().invoke(app, args) for args in json.loads(sys.argv[1])]
print(json.dumps({"results": [[r.exit_code, r.output] for r in results],
                  "tensorflow": "tensorflow" in sys.modules}))
"""


def test_mistakes_found_before_tensorflow_are_answered_without_it(tmp_path: Path) -> None:
    """A --set typo on a resume and a missing plugin file on train are config errors that
    need no TensorFlow: both answered (exit 2) in a process that never imports it."""
    import subprocess
    import sys

    from conftest import REPO, shipped, write_config

    run = tmp_path / "run"
    run.mkdir()
    write_config(run / "config.yaml", shipped("iris_mlp.yaml", seed=7))
    (run / "manifest.json").write_text("{}")
    plugged = write_config(tmp_path / "plugged.yaml",
                           shipped("iris_mlp.yaml", plugins=["missing_components.py"]))
    calls = [["resume", str(run), "--set", "train.epoch=2"],
             ["train", str(run / "config.yaml"), "--resume", str(run), "--set", "train.epoch=2"],
             ["train", str(plugged), "--output-root", str(tmp_path / "runs")]]
    done = subprocess.run([sys.executable, "-c", _NO_TF, json.dumps(calls)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["tensorflow"] is False
    (code1, resume), (code2, train_resume), (code3, train) = report["results"]
    assert code1 == code2 == code3 == 2, report
    for text in (resume, train_resume):
        assert "--set train.epoch=2: train.epoch: the config has no key 'epoch'" in text
        assert "did you mean 'train.epochs'" in text
    assert f"plugged.yaml:" in train and "plugins[0]: plugin file not found" in train
    assert not (tmp_path / "runs").exists()


def test_overrides_are_saved_next_to_the_resolved_config(tmp_path: Path) -> None:
    """A real training run (in this process: 1 epoch of iris) records its --set list."""
    sets = ["train.epochs=1", "+callbacks[]={TerminateOnNaN: {}}", "output.tensorboard=false",
            "output.formats=[keras]"]
    args = ["train", str(IRIS), "--output-root", str(tmp_path)]
    for text in sets:
        args += ["--set", text]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = [p for p in tmp_path.glob("*/*") if p.is_dir()]
    saved = yaml.safe_load((run / "overrides.yaml").read_text())
    assert saved == sets
    assert (run / "overrides.yaml").read_text().startswith("#")
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["train"]["epochs"] == 1
    assert config["callbacks"][-1] == {"TerminateOnNaN": {}}
    assert config["output"]["tensorboard"] is False

    # a resume's overrides are added to the record, marked with the resume they belong to
    # (the manifest's resumes[0]); what the file held stays as it was
    before = (run / "overrides.yaml").read_text()
    result = CliRunner().invoke(app, ["resume", str(run), "--set", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    text = (run / "overrides.yaml").read_text()
    assert text.startswith(before)
    (resume,) = json.loads((run / "manifest.json").read_text())["resumes"]
    assert yaml.safe_load(text) == [*sets, {"resume": 1, "started_at": resume["started_at"],
                                            "set": ["train.epochs=2"]}]
    assert "# kexp resume 1:" in text
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 2


def test_resume_overrides_record_is_one_readable_list() -> None:
    from kexp.config.overrides import overrides_record, with_resume_overrides

    text = with_resume_overrides(None, ["train.epochs=4"], 1, "t1")  # a run trained without
    text = with_resume_overrides(text, ["train.epochs=6", "output.formats=[keras]"], 2, "t2")
    assert text.startswith("# the --set overrides of this run")
    assert yaml.safe_load(text) == [{"resume": 1, "started_at": "t1", "set": ["train.epochs=4"]},
                                    {"resume": 2, "started_at": "t2",
                                     "set": ["train.epochs=6", "output.formats=[keras]"]}]
    first = overrides_record(["seed=3"])
    assert yaml.safe_load(with_resume_overrides(first.rstrip("\n"), ["x=1"], 1, "t")) == [
        "seed=3", {"resume": 1, "started_at": "t", "set": ["x=1"]}]
