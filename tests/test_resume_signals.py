"""Signals: the first SIGINT/SIGTERM finishes the step and saves (tested end to end, with the
resume, in test_resume.py); a second one exits at once, leaving only whole files and a
manifest that says so; outside the training loop the first one stops at once, and from the
moment a run directory exists (or a resume starts) no signal or exception leaves a run marked
`running`."""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from rich.console import Console

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


class _ActsOnPrint(Console):
    """A console that runs ``act`` right after printing a line containing ``text``: the
    moment a run has just announced its directory, or a resume its start."""

    def __init__(self, text: str, act: Callable[[], None]):
        super().__init__(file=io.StringIO())
        self.text, self.act = text, act

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*objects, **kwargs)
        if any(self.text in str(o) for o in objects):
            self.act()


def test_ctrl_c_right_after_a_new_run_is_recorded_marks_it_interrupted(tmp_path: Path) -> None:
    from kexp.training.lock import RunLock
    from kexp.training.run import train
    from kexp.training.signals import RunInterrupted

    # Ctrl-C just after the new run's manifest and config are written, before any data
    # fingerprint or training: a stop, recorded, with the command that resumes it
    def ctrl_c() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler runs here

    def unhandled(signum: int, frame: Any) -> None:  # kexp's handler must be the one called
        raise AssertionError("SIGINT arrived while kexp had no signal handler installed")

    previous = signal.signal(signal.SIGINT, unhandled)
    try:
        with pytest.raises(RunInterrupted):
            train(iris(tmp_path), out=_ActsOnPrint("run directory:", ctrl_c))
    finally:
        signal.signal(signal.SIGINT, previous)
    (run_dir,) = runs(tmp_path / "runs")
    stopped = manifest(run_dir)
    assert stopped["status"] == "interrupted", stopped
    assert stopped["resume_command"] == f"kexp resume {run_dir}"
    assert not RunLock.is_held(run_dir)


def test_a_resume_that_fails_right_after_its_start_is_failed(tmp_path: Path) -> None:
    # an interrupted run: the resume records its start (manifest `running`), then fails
    from kexp.training.lock import RunLock
    from kexp.training.run import train
    from test_resume_config import _run_dir

    run_dir = _run_dir(tmp_path, status="interrupted")

    def fail() -> None:
        raise RuntimeError("the disk went away")

    with pytest.raises(RuntimeError):
        train(None, resume=run_dir, out=_ActsOnPrint("resuming", fail))
    failed = manifest(run_dir)
    assert failed["status"] == "failed" and failed["error"]["message"] == "the disk went away"
    assert [r["previous_status"] for r in failed["resumes"]] == ["interrupted"]
    assert not RunLock.is_held(run_dir)
