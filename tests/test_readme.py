"""The README's promises: its two set-up commands, what the first one trains, and the
examples a newcomer compares with what kexp does.

CI runs ``.ci/run``, which must run the README's test command verbatim, so the command a new
user types is the one that is tested. The main job (the README's first command) must reach at
least 0.95 test accuracy on the held-out digits: it is trained here in full, exactly as
shipped, so a change to the data, the config or the training loop that costs accuracy fails.
The config the README shows as ``configs/digits_cnn.yaml`` is that file, its error example is
what ``kexp validate`` prints for the mistake it describes, and its table of commands names
every command and option of ``kexp --help``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import CONFIGS, DATA, REPO, assert_user_error, cli, only_run


def _section(title: str) -> str:
    """The README's text under ``## title``, up to the next ``## `` heading."""
    section = (REPO / "README.md").read_text().split(f"\n## {title}\n", 1)[1]
    return section.split("\n## ", 1)[0]


def _setup_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", _section("Set-up: two commands"))[:2]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    train, tests = _setup_commands()
    assert "kexp train configs/digits_cnn.yaml" in train
    assert tests.endswith("python -m pytest")
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert tests in ci, f"{tests!r} is not a line of .ci/run"


@pytest.mark.slow
def test_the_main_job_reaches_its_stated_test_accuracy(tmp_path: Path) -> None:
    train, _ = _setup_commands()
    config = train.rsplit("kexp train ", 1)[1].split()[0]
    done = cli(["train", config, "--output-root", tmp_path], timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    evaluation = json.loads((only_run(tmp_path) / "evaluation.json").read_text())
    assert evaluation["examples"] == 359
    assert evaluation["metrics"]["accuracy"] >= 0.95, evaluation
    assert "test" in done.stdout


def test_the_config_shown_is_the_shipped_file() -> None:
    section = _section("A config, briefly")
    assert "`configs/digits_cnn.yaml`, in full:" in section
    shown = re.findall(r"```yaml\n(.*?)```", section, re.S)[0]
    assert shown == (CONFIGS / "digits_cnn.yaml").read_text(), (
        "the README's config differs from configs/digits_cnn.yaml: show the file as it is")


def test_the_error_example_is_what_kexp_prints(tmp_path: Path) -> None:
    """The README's mistake (``filters`` misspelt in the first Conv2D) made in a copy of the
    config at the same relative path, so the message names the same file and line."""
    section = _section("A config, briefly")
    lines = (CONFIGS / "digits_cnn.yaml").read_text().splitlines(keepends=True)
    line = next(n for n, text in enumerate(lines, 1) if "Conv2D: {filters:" in text)
    lines[line - 1] = lines[line - 1].replace("filters:", "filtrs:", 1)
    assert f"(line {line})" in section, f"the README should say the mistake is on line {line}"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "digits_cnn.yaml").write_text("".join(lines))
    (tmp_path / "configs" / "data").symlink_to(DATA)
    done = cli(["validate", "configs/digits_cnn.yaml"], cwd=tmp_path)
    assert_user_error(done)
    example = section.split("`kexp validate configs/digits_cnn.yaml` prints:", 1)[1]
    example = re.findall(r"```\n(.*?)```", example, re.S)[0]
    printed = " ".join((done.stdout + done.stderr).split())  # however the console wraps
    assert " ".join(example.split()) in printed, f"README:\n{example}\nkexp:\n{done.stderr}"


def test_the_commands_table_names_every_command_and_option() -> None:
    table = [row for row in _section("Commands").splitlines() if row.startswith("| `kexp ")]
    usage = cli(["--help"])
    assert usage.returncode == 0, usage.stderr
    commands = re.findall(r"^  ([a-z][\w-]*)\s", usage.stdout.split("Commands:", 1)[1], re.M)
    assert len(commands) >= 9, usage.stdout
    for command in commands:
        rows = [row for row in table if row.startswith(f"| `kexp {command} ")
                or row.startswith(f"| `kexp {command}`")]
        assert len(rows) == 1, f"kexp {command}: {len(rows)} rows in the README's table"
        helped = cli([command, "--help"])
        assert helped.returncode == 0, helped.stderr
        for short, long in re.findall(r"^  (?:(-\w), )?(--[\w-]+)", helped.stdout, re.M):
            if long in ("--help", "--debug"):
                continue
            assert long in rows[0] or (short and short in rows[0]), (
                f"kexp {command} {long} is not in the README's commands table")
