"""kexp's TensorFlow import (kexp/tf.py): quiet by default, TF's own output when asked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

IMPORT = "import kexp.tf, sys; sys.stderr.write('after import\\n')"


def _stderr(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", IMPORT], env={**env, **env_extra},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_tensorflow_start_up_chatter_is_held_back() -> None:
    # TF 2.21 prints INFO lines at import even with TF_CPP_MIN_LOG_LEVEL=3 (the default kexp
    # sets); none of them may reach a kexp user's terminal
    text = _stderr({})
    assert "I0000" not in text and "absl::InitializeLog" not in text, text
    assert text.endswith("after import\n")


def test_a_log_level_the_user_chose_is_respected() -> None:
    text = _stderr({"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert text.endswith("after import\n")
    if "oneDNN" not in text and "cuda" not in text.lower():
        pytest.skip("this TensorFlow build prints nothing at import to compare with")
    assert "I0000" in text or "absl::InitializeLog" in text, text  # TF's own INFO lines
