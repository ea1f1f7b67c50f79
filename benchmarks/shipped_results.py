"""Train every shipped config in full and print the README's results table.

Run by hand (not in CI: a full run of all of them takes a few minutes on 2 cores):

    python benchmarks/shipped_results.py                 # every config under configs/
    python benchmarks/shipped_results.py digits_cnn.yaml iris_mlp.yaml

The image folders and TFRecords two examples read are derived data: written first with
``configs/data/write_digits.py`` when they are missing. The figures in the README come from this script, so they can be checked and refreshed in
one step after a change that moves them (a new data order, a changed default). Each config
is trained with ``kexp train`` exactly as a user runs it, into a temporary output root; the
table gives the held-out test metrics from the run's ``evaluation.json``, the epochs trained
(early stopping) and the wall time, under the commit and CPU they were measured on. With
``deterministic: true`` (every shipped config) the metrics repeat exactly on the same
machine and software; another CPU or TensorFlow build may move the last digits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def shipped_configs() -> list[Path]:
    return sorted(p for p in CONFIGS.rglob("*.yaml") if "data" not in p.relative_to(CONFIGS).parts)


def train(config: Path, root: Path) -> dict:
    """Train one config with the real CLI; its test metrics, epochs and wall time."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "kexp", "train", str(config), "--output-root", str(root)],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{config} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    (run_dir,) = [p for p in root.glob("*/*") if p.is_dir()]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    evaluation_file = run_dir / "evaluation.json"
    metrics = json.loads(evaluation_file.read_text())["metrics"] if evaluation_file.exists() else {}
    return {"metrics": metrics, "epochs": manifest.get("epochs_completed"), "seconds": seconds}


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x {os.cpu_count()}"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} x {os.cpu_count()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*", help="config files under configs/ (default: all)")
    args = parser.parse_args()
    configs = [CONFIGS / c for c in args.configs] if args.configs else shipped_configs()
    derived = [CONFIGS / "data" / name for name in ("digits_png", "digits_tfrecord")]
    if not all(path.exists() for path in derived):  # the image_dir and tfrecord examples' data
        subprocess.run([sys.executable, str(CONFIGS / "data" / "write_digits.py")], check=True,
                       cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    print(f"commit {_commit()}, {_cpu()}, load average {os.getloadavg()[0]:.1f}")
    print("| config | epochs | test metrics | wall time |")
    print("| --- | ---: | --- | ---: |")
    for config in configs:
        with tempfile.TemporaryDirectory() as tmp:
            result = train(config, Path(tmp))
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items() if k != "loss"
                            and not k.endswith("_loss"))
        print(f"| `{config.relative_to(REPO)}` | {result['epochs']} | {metrics} | "
              f"{result['seconds']:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
