"""The README's promises: its two set-up commands, and what the first one trains.

CI runs ``.ci/run``, which must run the README's test command verbatim, so the command a new
user types is the one that is tested. The main job (the README's first command) must reach at
least 0.95 test accuracy on the held-out digits: it is trained here in full, exactly as
shipped, so a change to the data, the config or the training loop that costs accuracy fails.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import REPO, cli, only_run


def _setup_commands() -> list[str]:
    section = (REPO / "README.md").read_text().split("## Set-up: two commands", 1)[1]
    section = section.split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)[:2]


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
