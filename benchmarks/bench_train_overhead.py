"""What kexp costs on top of plain Keras: ``kexp train`` against equivalent hand-written
Keras scripts, same model, same data, same epochs, whole process, measured in the same run.

Run by hand (not in CI; timings depend on the machine and its load):

    python benchmarks/bench_train_overhead.py                       # 5 pairs; 8 and 30 epochs
    python benchmarks/bench_train_overhead.py --pairs 9 --copies 4  # 4x the training data
    python benchmarks/bench_train_overhead.py --epochs 8 --long-epochs 0   # short runs only

Programs (every one is run once, unmeasured, before the pairs: file cache and bytecode):

* ``plain``       the digits CNN written by hand: seeded split, tf.data, fit, model.keras, test
                  evaluation; writes nothing during training;
* ``plain-full``  the same plus what kexp writes by default, the Keras way: best and last
                  ModelCheckpoint, BackupAndRestore, CSVLogger, TensorBoard, TerminateOnNaN,
                  model.keras + model.h5;
* ``kexp``        ``kexp train`` on the shipped config as a user runs it (run directory,
                  manifest with the environment and data hashes, history.csv, TensorBoard,
                  best/last checkpoints and the resume state every epoch, model.keras +
                  model.h5, test evaluation, the checks before training);
* ``kexp-lean``   the same with output.formats [keras], TensorBoard off and no best/last
                  checkpoints: closest to ``plain`` (kexp still keeps its manifest, history
                  and resume state, and runs its checks).

Each pair runs every program back to back, the order alternating, so a slow spell of the
machine hits all of them; ratios are per pair against ``plain`` (``kexp`` also against
``plain-full``), and the medians over pairs are printed (target <= 1.03). CPU seconds (the
process and its threads) are printed next to wall time: on a shared machine they are the
steadier measure. A short run (``--epochs``) shows mostly the fixed cost of starting a
process; the long one (``--long-epochs``, more epochs; ``--copies`` for longer epochs) shows
what kexp costs while training.

Phases, from hooks on Keras' ``CallbackList`` that this harness installs the same way in every
program: *first step* is process start to the end of the first training batch (imports,
config, checks, data, model, tracing); *epoch* is the steady-state time of one epoch (median
of epoch 3 on, validation and every epoch-end callback included); *end* is from the end of
training to the process exit (final models, test evaluation, manifest).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "digits_cnn.yaml"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

# Installs the phase hooks, then runs the program (kexp's CLI or a plain script). Each event
# is (name, wall seconds since the parent started the process, this process's CPU seconds).
HARNESS = textwrap.dedent("""
    import atexit, json, os, runpy, sys, time
    start = float(os.environ["BENCH_START"])
    events = []
    def mark(name):
        events.append((name, time.time() - start, time.process_time()))
    from keras.src.callbacks.callback_list import CallbackList
    hooks = {}
    def hook(method, name, once=False):
        original = getattr(CallbackList, method)
        def wrapped(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            if not (once and hooks.get(name)):
                hooks[name] = True
                mark(name)
            return result
        setattr(CallbackList, method, wrapped)
    hook("on_train_begin", "train_begin")
    hook("on_train_batch_end", "first_step", once=True)
    hook("on_epoch_end", "epoch_end")
    hook("on_train_end", "train_end")
    @atexit.register
    def dump():
        mark("exit")
        with open(os.environ["BENCH_EVENTS"], "w") as fh:
            json.dump(events, fh)
    target, sys.argv = sys.argv[1], sys.argv[1:]
    if target == "kexp":
        runpy.run_module("kexp", run_name="__main__")
    else:
        runpy.run_path(target, run_name="__main__")
""")

# The same experiment written by hand: seeded split, tf.data pipeline, model, fit, save,
# evaluate. Paths and numbers are filled in from the kexp config; the output folder is the
# first argument (a new one per run: BackupAndRestore would otherwise resume).
PLAIN = textwrap.dedent("""
    import sys
    import numpy as np, keras, tensorflow as tf
    out = sys.argv[1]
    keras.utils.set_random_seed({seed})
    tf.config.experimental.enable_op_determinism()
    train, test = np.load("{train}"), np.load("{test}")
    x, y = train["images"], train["labels"]
    order = np.random.default_rng({seed}).permutation(len(x))
    n_val = int(round(len(x) * {val}))
    val, fit = order[:n_val], order[n_val:]

    def dataset(xs, ys, training):
        data = tf.data.Dataset.from_tensor_slices((xs, ys)).cache()
        if training:
            data = data.shuffle(len(xs), seed={seed}, reshuffle_each_iteration=True)
        return data.batch({batch}).prefetch(tf.data.AUTOTUNE)

    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Rescaling(0.0625),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(0.003), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    callbacks = []
    if {full}:  # what kexp writes by default, with Keras' own callbacks
        callbacks = [
            keras.callbacks.TerminateOnNaN(),
            keras.callbacks.CSVLogger(out + "/history.csv"),
            keras.callbacks.TensorBoard(out + "/logs"),
            keras.callbacks.ModelCheckpoint(out + "/checkpoints/last.keras"),
            keras.callbacks.ModelCheckpoint(out + "/checkpoints/best.keras",
                                            monitor="val_accuracy", mode="max",
                                            save_best_only=True),
            keras.callbacks.BackupAndRestore(out + "/backup", delete_checkpoint=False),
        ]
    model.fit(dataset(x[fit], y[fit], True), validation_data=dataset(x[val], y[val], False),
              epochs={epochs}, verbose=0, callbacks=callbacks)
    model.save(out + "/model.keras")
    if {full}:
        model.save(out + "/model.h5")
    print(model.evaluate(dataset(test["images"], test["labels"], False), return_dict=True,
                         verbose=0))
""")

PROGRAMS = ("plain", "plain-full", "kexp", "kexp-lean")


def training_data(tmp: Path, copies: int) -> tuple[Path, Path]:
    """The shipped digits files, the training one repeated ``copies`` times (longer epochs)."""
    data = yaml.safe_load(CONFIG.read_text())["data"]
    train, test = ((CONFIG.parent / data[s]["path"]).resolve() for s in ("train", "test"))
    if copies > 1:
        with np.load(train) as npz:
            arrays = {k: np.concatenate([npz[k]] * copies) for k in npz.files}
        train = tmp / f"digits_train_x{copies}.npz"
        np.savez(train, **arrays)
    return train, test


def kexp_config(tmp: Path, epochs: int, lean: bool, data: tuple[Path, Path]) -> Path:
    config = yaml.safe_load(CONFIG.read_text())
    for split, path in zip(("train", "test"), data):
        config["data"][split]["path"] = str(path)
    config["train"] = {"epochs": epochs}
    config["callbacks"] = []  # fixed epochs: no early stopping in any program
    config["output"] = {"root": str(tmp / "experiments")}
    if lean:
        config["output"].update(formats=["keras"], tensorboard=False)
        config["checkpoint"] = {"save_best": False, "save_last": False}
    path = tmp / f"{'lean' if lean else 'kexp'}-{epochs}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def plain_script(tmp: Path, epochs: int, full: bool, data: tuple[Path, Path]) -> Path:
    config = yaml.safe_load(CONFIG.read_text())
    path = tmp / f"{'plain-full' if full else 'plain'}-{epochs}.py"
    path.write_text(PLAIN.format(
        seed=config["seed"], train=data[0], test=data[1],
        val=config["data"]["validation"]["split"], batch=config["data"]["batch_size"],
        epochs=epochs, full=full,
    ))
    return path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Runner:
    """Runs one program in a fresh process and reads back its phase events."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.count = 0

    def __call__(self, args: list[str]) -> dict[str, float]:
        self.count += 1
        events_file = self.tmp / "events.json"
        events_file.unlink(missing_ok=True)
        out = self.tmp / f"out-{self.count}"  # the plain scripts' output folder
        out.mkdir()
        argv = [*args, str(out)] if args[0] != "kexp" else args
        cpu = _children_cpu()
        start = time.time()
        env = {**ENV, "BENCH_START": repr(start), "BENCH_EVENTS": str(events_file)}
        done = subprocess.run([sys.executable, "-c", HARNESS, *argv], env=env, cwd=self.tmp,
                              capture_output=True, text=True)
        wall = time.time() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return phases(json.loads(events_file.read_text()), wall, _children_cpu() - cpu)


def phases(events: list[list[Any]], wall: float, cpu: float) -> dict[str, float]:
    """Whole-process and per-phase wall/CPU seconds from one run's events."""
    first = {name: (w, c) for name, w, c in reversed(events)}  # the first of each name
    last = {name: (w, c) for name, w, c in events}
    ends = [(w, c) for name, w, c in events if name == "epoch_end"]
    steady = ends[2:] if len(ends) > 3 else ends
    epoch_wall = [b[0] - a[0] for a, b in zip(steady, steady[1:])]
    epoch_cpu = [b[1] - a[1] for a, b in zip(steady, steady[1:])]
    return {
        "wall": wall, "cpu": cpu,
        "first_step_wall": first["first_step"][0], "first_step_cpu": first["first_step"][1],
        "epoch_wall": statistics.median(epoch_wall) if epoch_wall else float("nan"),
        "epoch_cpu": statistics.median(epoch_cpu) if epoch_cpu else float("nan"),
        "end_wall": last["exit"][0] - last["train_end"][0],
        "end_cpu": last["exit"][1] - last["train_end"][1],
    }


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def measure(tmp: Path, epochs: int, pairs: int, data: tuple[Path, Path],
            run: Runner) -> dict[str, list[dict[str, float]]]:
    programs = {
        "plain": [str(plain_script(tmp, epochs, False, data))],
        "plain-full": [str(plain_script(tmp, epochs, True, data))],
        "kexp": ["kexp", "train", str(kexp_config(tmp, epochs, False, data))],
        "kexp-lean": ["kexp", "train", str(kexp_config(tmp, epochs, True, data))],
    }
    for args in programs.values():  # warm-up of every program, not measured
        run(args)
    results: dict[str, list[dict[str, float]]] = {k: [] for k in programs}
    for pair in range(pairs):
        order = list(programs) if pair % 2 == 0 else list(reversed(programs))
        for key in order:
            results[key].append(run(programs[key]))
        line = "  ".join(f"{k} {results[k][-1]['wall']:6.2f}s" for k in programs)
        print(f"  {epochs} epochs, pair {pair + 1}/{pairs}: {line}  (load {load_average()})",
              flush=True)
    return results


def summarize(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    def median(key: str, field: str) -> float:
        return statistics.median(r[field] for r in results[key])

    def ratio(key: str, base: str, field: str) -> float:
        return statistics.median(r[field] / b[field] for r, b in zip(results[key], results[base]))

    summary = {}
    for key in results:
        base = "plain"
        summary[key] = {field: median(key, field) for field in results[key][0]}
        summary[key].update(ratio=ratio(key, base, "wall"), cpu_ratio=ratio(key, base, "cpu"),
                            epoch_ratio=ratio(key, base, "epoch_cpu"))
        if key == "kexp":  # also against what plain Keras costs writing the same files
            summary["kexp vs plain-full"] = {
                "ratio": ratio(key, "plain-full", "wall"),
                "cpu_ratio": ratio(key, "plain-full", "cpu"),
                "epoch_ratio": ratio(key, "plain-full", "epoch_cpu"),
            }
    return summary


def report(title: str, summary: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"{'program':<11} {'wall s':>7} {'ratio':>6} {'CPU s':>7} {'ratio':>6} "
          f"{'1st step s':>11} {'epoch ms':>9} {'ratio':>6} {'end s':>6}")
    print(f"{'':<11} {'':>7} {'':>6} {'':>7} {'':>6} {'wall/CPU':>11} {'wall/CPU':>9} "
          f"{'(CPU)':>6} {'CPU':>6}")
    for key, s in summary.items():
        if key == "kexp vs plain-full":
            print(f"{'  vs full':<11} {'':>7} {s['ratio']:6.3f} {'':>7} {s['cpu_ratio']:6.3f} "
                  f"{'':>11} {'':>9} {s['epoch_ratio']:6.3f}")
            continue
        print(f"{key:<11} {s['wall']:7.2f} {s['ratio']:6.3f} {s['cpu']:7.2f} "
              f"{s['cpu_ratio']:6.3f} {s['first_step_wall']:5.2f}/{s['first_step_cpu']:<5.2f} "
              f"{1000 * s['epoch_wall']:4.0f}/{1000 * s['epoch_cpu']:<4.0f} "
              f"{s['epoch_ratio']:6.3f} {s['end_cpu']:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8, help="the short run")
    parser.add_argument("--long-epochs", type=int, default=30, help="the long run (0: none)")
    parser.add_argument("--copies", type=int, default=1,
                        help="repeat the training data this many times (longer epochs)")
    options = parser.parse_args()

    print(f"{cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} "
          f"{platform.release()}, Python {platform.python_version()}; "
          f"load average at start {load_average()}", flush=True)
    everything = {}
    with tempfile.TemporaryDirectory(prefix="kexp-bench-") as name:
        tmp = Path(name)
        data = training_data(tmp, options.copies)
        run = Runner(tmp)
        for epochs in (options.epochs, options.long_epochs):
            if epochs <= 0:
                continue
            summary = summarize(measure(tmp, epochs, options.pairs, data, run))
            report(f"{options.pairs} pairs, {epochs} epochs of the digits CNN"
                   f"{f' on {options.copies}x the data' if options.copies > 1 else ''} "
                   f"(medians; ratios per pair against plain; load average now "
                   f"{load_average()})", summary)
            everything[f"{epochs}_epochs"] = summary
    print(json.dumps(everything))


if __name__ == "__main__":
    main()
