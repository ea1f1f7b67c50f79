"""The corpus of bad configs: every file in tests/bad_configs/ holds one mistake and says, in
its header, how kexp must report it::

    # expect-path: train.epoch            the key path named in the message
    # expect-line: 44                     the line of that file the message points at
    # expect: did you mean 'epochs'       gist(s) of the message (repeatable)
    # expect-file: _bases/bad_base.yaml   (optional) the file named, when not this one
    # phase: keras                        (optional) found by the Keras-level checks
    # args: --set train.epochs=1          (optional) extra command-line arguments
    # also-at: 12: data.batch_size        (optional, repeatable) one more problem reported
    #                                     with the first, at this line of this file

Each runs through the real CLI (Typer's app in this process: most never import TensorFlow,
so they take milliseconds; a sample also runs in fresh processes) and must exit 2 with one
problem (plus its ``also-at`` ones: a mistake that stops loading, such as an unset variable
or a missing base config, must not hide the others), located at ``file:line: key.path``,
and no traceback. The assertions are about the
key path, the line and the gist, never the full text, so new optional schema fields do not
break them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import REPO, assert_user_error, cli
from kexp.cli import app

CORPUS = Path(__file__).resolve().parent / "bad_configs"
CASES = sorted(CORPUS.glob("*.yaml"))


@dataclass
class Expected:
    path: str
    line: int
    gists: list[str] = field(default_factory=list)
    file: Path | None = None
    keras: bool = False
    args: list[str] = field(default_factory=list)
    #: (line, key path) of each further problem reported with the first, in this file.
    also: list[tuple[int, str]] = field(default_factory=list)


def expected(config: Path) -> Expected:
    """The expectations in a corpus file's header comments."""
    fields: dict[str, list[str]] = {}
    for line in config.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, sep, value = line[1:].strip().partition(":")
        if sep:
            fields.setdefault(key.strip(), []).append(value.strip())
    return Expected(
        path=fields["expect-path"][0],
        line=int(fields["expect-line"][0]),
        gists=fields.get("expect", []),
        file=config.parent / fields["expect-file"][0] if "expect-file" in fields else None,
        keras=fields.get("phase", [""])[0] == "keras",
        args=fields.get("args", [""])[0].split(),
        also=[(int(line), path.strip()) for line, _, path in
              (value.partition(":") for value in fields.get("also-at", []))],
    )


def check_report(config: Path, text: str, code: int) -> None:
    """Exit 2, one problem (and the also-at ones), at file:line: key.path, with every gist,
    no traceback."""
    want = expected(config)
    assert code == 2, text
    assert "Traceback" not in text, text
    count = 1 + len(want.also)
    assert f"error: {count} problem{'s' if count > 1 else ''} in the config" in text, text
    located = f"{want.file or config}:{want.line}: {want.path}: "
    lines = [line for line in text.splitlines() if line.strip().startswith(located)]
    assert lines, f"no line starting with {located!r} in:\n{text}"
    for gist in want.gists:
        assert gist in lines[0], f"{gist!r} not in {lines[0]!r}"
    for line, path in want.also:
        also = f"{config}:{line}: {path}: "
        assert any(row.strip().startswith(also) for row in text.splitlines()), (also, text)


def test_the_corpus_is_large_and_well_formed() -> None:
    assert len(CASES) >= 100
    for config in CASES:
        want = expected(config)  # every file says what to expect
        assert want.gists, config.name
        assert 1 <= want.line <= len(config.read_text().splitlines()), config.name
        for line, _ in want.also:
            assert 1 <= line <= len(config.read_text().splitlines()), config.name


@pytest.mark.parametrize("config", CASES, ids=lambda p: p.stem)
def test_bad_config_is_reported_at_its_key_path_and_line(config: Path) -> None:
    want = expected(config)
    result = CliRunner().invoke(app, ["validate", str(config), *want.args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    check_report(config, result.output, result.exit_code)


_NO_TF_SCRIPT = """
import sys
from typer.testing import CliRunner
from kexp.cli import app
for path in sys.argv[1:]:
    result = CliRunner().invoke(app, ["validate", path])
    print("=====", path, result.exit_code)
    print(result.output)
print("tensorflow imported:", "tensorflow" in sys.modules)
"""


def test_schema_errors_never_import_tensorflow() -> None:
    """Every schema-level case, in one fresh process: all reported, TensorFlow never loaded."""
    schema_cases = [c for c in CASES if not expected(c).keras and not expected(c).args]
    done = subprocess.run(
        [sys.executable, "-c", _NO_TF_SCRIPT, *map(str, schema_cases)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "tensorflow imported: False" in done.stdout, done.stdout[-2000:]
    blocks = done.stdout.split("===== ")[1:]
    assert len(blocks) == len(schema_cases)
    for block, config in zip(blocks, schema_cases):
        head, _, body = block.partition("\n")
        check_report(config, body, int(head.rsplit(" ", 1)[1]))


def test_real_process_reports_the_same() -> None:
    """A case through ``python -m kexp`` itself (Keras-level cases run in-process: the same
    app, without paying TensorFlow's import once more)."""
    config = CORPUS / "train_epoch_typo.yaml"
    done = cli(["validate", config])
    assert_user_error(done)
    check_report(config, done.stdout + done.stderr, done.returncode)


def test_train_reports_like_validate_and_writes_nothing(tmp_path: Path) -> None:
    """``kexp train`` locates Keras-level errors the same way, before any run directory."""
    config = CORPUS / "keras_callback_kwarg_typo.yaml"
    result = CliRunner().invoke(app, ["train", str(config), "--output-root", str(tmp_path)])
    check_report(config, result.output, result.exit_code)
    assert not any(tmp_path.iterdir())


def test_all_keras_mistakes_at_once(tmp_path: Path) -> None:
    """Several Keras-level mistakes in different sections: all reported, each located."""
    text = (CORPUS / "keras_unknown_callback.yaml").read_text()
    text = (text.replace("Flatten: {}", "Flaten: {}")
                .replace("optimizer: adam", "optimizer: adamm")
                .replace("kernel_size: 3,", "kernel_sise: 3,")
                .replace("metrics: [accuracy]", "metrics: [acuracy]"))
    path = tmp_path / "many.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "5 problems" in result.output, result.output
    for key in ("model.sequential.layers[1].Conv2D.kernel_sise", "model.sequential.layers[3]",
                "compile.optimizer", "compile.metrics[0]", "callbacks[0]"):
        assert any(line.strip().startswith(str(path)) and f": {key}: " in line
                   for line in result.output.splitlines()), (key, result.output)


def test_schema_errors_come_with_the_next_step_hint() -> None:
    result = CliRunner().invoke(app, ["validate", str(CORPUS / "train_epoch_typo.yaml")])
    assert "checked once these are fixed" in result.output


def test_environment_variable_set_makes_the_env_case_valid(monkeypatch, tmp_path) -> None:
    config = CORPUS / "env_var_unset.yaml"
    monkeypatch.setenv("KEXP_TEST_SURELY_UNSET_VAR", str(tmp_path))
    from kexp.config import load_config

    assert load_config(config).config.output.root == str(tmp_path)
    assert os.environ["KEXP_TEST_SURELY_UNSET_VAR"] == str(tmp_path)
