"""Signals: the first SIGINT/SIGTERM finishes the step and saves (tested end to end, with the
resume, in test_resume.py); a second one exits at once, leaving only whole files and a
manifest that says so; outside the training loop the first one stops at once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from _kexp_hooks import MARK
from _repro import iris, manifest, popen_hooked, runs
from test_integrity import assert_final_files_load


def test_a_second_sigint_exits_at_once(tmp_path: Path) -> None:
    # each step ends with a 30 s pause: the run can only end inside it by exiting at once
    process = popen_hooked("slow_steps:30", ["train", iris(tmp_path)])
    try:
        for line in process.stderr:
            if line.startswith(f"{MARK} 1 1"):
                break
        process.send_signal(signal.SIGINT)
        for line in process.stderr:
            if "SIGINT received: finishing the current step" in line:
                break
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 128 + signal.SIGINT
        assert time.monotonic() - started < 10  # not after the 30 s step
        stderr = process.stderr.read()
    finally:
        process.kill()
    assert "second SIGINT: stopping now" in stderr
    (run_dir,) = runs(tmp_path / "runs")
    stopped = manifest(run_dir)
    assert stopped["status"] == "interrupted"
    assert "stopped at once by a second SIGINT" in stopped["error"]["message"]
    assert stopped["resume_command"] == f"kexp resume {run_dir}"
    assert_final_files_load(run_dir)


def test_outside_the_training_loop_the_first_signal_stops_at_once() -> None:
    from kexp.training.signals import RunInterrupted, StopRequest

    with StopRequest() as request:
        with pytest.raises(RunInterrupted) as caught:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs here
    assert caught.value.exit_code == 128 + signal.SIGTERM
    assert request.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers put back


def test_inside_the_training_loop_the_first_signal_is_only_a_request() -> None:
    from kexp.training.signals import StopRequest

    with StopRequest() as request:
        request.accepting = True
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        assert request.requested and request.signum == signal.SIGINT
