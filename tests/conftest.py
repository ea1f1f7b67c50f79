"""Shared fixtures: the repository's shipped configs and data, and the real CLI in a subprocess.

End-to-end tests run ``python -m kexp`` in a fresh process, exactly as a user would, and then
check the files it wrote. Keep them small: 1-2 epochs on the shipped data.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
DATA = CONFIGS / "data"


def cli(args: Sequence[str], cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m kexp ARGS`` and capture its output (text)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "kexp", *map(str, args)],
        cwd=cwd or REPO, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def assert_user_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, no traceback, and every fragment in the message."""
    text = done.stdout + done.stderr
    assert done.returncode == 2, text
    assert "Traceback" not in text, text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"


def shipped(name: str, **overrides: object) -> dict:
    """A shipped config as data, data paths made absolute, top-level keys overridden.

    Nested dicts in ``overrides`` are merged one level deep (e.g. ``train={"epochs": 1}``).
    """
    data = yaml.safe_load((CONFIGS / name).read_text())
    for split in ("train", "validation", "test"):
        source = data["data"].get(split)
        if isinstance(source, dict) and "path" in source:
            source["path"] = str((CONFIGS / source["path"]).resolve())
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def tiny_digits(tmp_path: Path) -> Path:
    """The digits config for 1 epoch, writing runs under tmp_path/experiments."""
    config = shipped(
        "digits_cnn.yaml",
        train={"epochs": 1},
        callbacks=[],
        output={"root": str(tmp_path / "experiments")},
    )
    return write_config(tmp_path / "digits.yaml", config)


def only_run(root: Path) -> Path:
    """The single run directory under ``root`` (asserts there is exactly one)."""
    runs = [p for p in root.glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]
