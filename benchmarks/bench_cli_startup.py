"""How fast kexp answers when it need not train: ``kexp --help`` and ``kexp validate`` on a
config with a schema error, whole-process wall time, against ``import tensorflow``.

Run by hand (not in CI; timings depend on the machine and its load):

    python benchmarks/bench_cli_startup.py            # 7 runs of each, medians
    python benchmarks/bench_cli_startup.py --runs 15 --full

Targets (issue 7): ``kexp --help`` under 0.25 s, a config with schema errors reported in
under 0.5 s, both independent of TensorFlow's import time (the ratios below). ``python -c
pass`` is the floor no Python CLI can beat; ``kexp`` through a pyenv shim adds the shim's
own start-up, which is why ``python -m kexp`` is measured too.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BAD = REPO / "tests" / "bad_configs" / "train_epoch_typo.yaml"
GOOD = REPO / "configs" / "digits_cnn.yaml"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wall(argv: list[str], runs: int, expect: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) times of ``runs`` fresh processes, after one warm-up.

    CPU time is what the process itself costs; on a busy machine wall time also counts the
    wait for a core, so the CPU column is the better guide to an idle machine's wall time.
    """
    walls, cpus = [], []
    for index in range(runs + 1):
        cpu = _children_cpu()
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=REPO, env=ENV, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != expect:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}, expected {expect}:\n"
                             f"{done.stdout}{done.stderr}")
        if index:
            walls.append(elapsed)
            cpus.append(_children_cpu() - cpu)
    return walls, cpus


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--full", action="store_true",
                        help="also time validate on a good config (imports TF, builds the model)")
    args = parser.parse_args()
    py = sys.executable
    cases: list[tuple[str, list[str], int, float | None]] = [
        ("python -c pass (floor)", [py, "-c", "pass"], 0, None),
        ("python -m kexp --help", [py, "-m", "kexp", "--help"], 0, 0.25),
    ]
    script = shutil.which("kexp")
    if script:
        cases.append(("kexp --help (console script)", [script, "--help"], 0, 0.25))
    cases += [
        ("kexp validate <schema error>", [py, "-m", "kexp", "validate", str(BAD)], 2, 0.5),
        ("kexp train --print-config", [py, "-m", "kexp", "train", str(GOOD), "--print-config"],
         0, 0.5),
        ("python -c 'import tensorflow'", [py, "-c", "import tensorflow"], 0, None),
    ]
    if args.full:
        cases.append(("kexp validate <good config>", [py, "-m", "kexp", "validate", str(GOOD)],
                      0, None))

    load_before = _load()
    medians: dict[str, float] = {}
    rows = []
    for label, argv, expect, target in cases:
        walls, cpus = wall(argv, args.runs, expect)
        medians[label] = statistics.median(walls)
        rows.append((label, medians[label], min(walls), statistics.median(cpus), target))
    tf = medians["python -c 'import tensorflow'"]
    # the 1-minute load average lags: both ends say more than one reading
    print(f"{args.runs} runs each; seconds; load average {load_before:.2f} before, "
          f"{_load():.2f} after, on {os.cpu_count()} CPUs")
    print(f"{'command':34} {'wall med':>9} {'wall min':>9} {'cpu med':>8} {'/ import tf':>12}"
          "  target (wall)")
    for label, median, fastest, cpu, target in rows:
        verdict = "" if target is None else (
            f"< {target:g} s " + ("ok" if median < target else "MISSED"))
        print(f"{label:34} {median:9.3f} {fastest:9.3f} {cpu:8.3f} {median / tf:12.2f}  {verdict}")


if __name__ == "__main__":
    main()
