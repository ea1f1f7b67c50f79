"""What kexp costs on top of plain Keras: ``kexp train`` against an equivalent hand-written
Keras script, same model, same data, same epochs, whole process, measured in the same run.

Run by hand (not in CI; timings depend on the machine and its load):

    python benchmarks/bench_train_overhead.py                  # 5 paired runs, 8 epochs
    python benchmarks/bench_train_overhead.py --pairs 9 --epochs 20

Each pair runs both programs back to back, in alternating order, so a slow spell of the
machine hits both; the ratio is per pair, the median over pairs is printed (target <= 1.03).
Two kexp variants are measured:

* ``kexp``       the shipped digits CNN config as a user runs it (run directory, manifest with
                 the environment and data hashes, history.csv, TensorBoard logs, best/last
                 checkpoints every epoch, model.keras + model.h5, test evaluation);
* ``kexp-lean``  the same with output.formats [keras], TensorBoard off and no best/last
                 checkpoints: closest to what the plain script writes (model.keras, test
                 evaluation), plus what kexp always keeps (manifest, history, resume state).

On a model this small an epoch takes a fraction of a second, so the fixed costs (writing
checkpoints and resume state each epoch, the environment record) show up as a visible
ratio; they do not grow with the model's compute, so the ratio falls towards 1 as epochs
get longer. CPU seconds are printed next to wall time: on a shared machine they are the
steadier measure.

"Time to first step" is from process start to the end of the first training batch (a hook
on Keras' ``CallbackList`` installed by this harness the same way for all programs): what
the user waits before training is under way (imports, config, data, model build, tracing).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "digits_cnn.yaml"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

# Installs the first-step hook, then runs the program (kexp's CLI or the plain script).
HARNESS = textwrap.dedent("""
    import os, runpy, sys, time
    start = float(os.environ["BENCH_START"])
    from keras.src.callbacks.callback_list import CallbackList
    original = CallbackList.on_train_batch_end
    def on_train_batch_end(self, batch, logs=None):
        if not os.environ.get("BENCH_SEEN"):
            os.environ["BENCH_SEEN"] = "1"
            with open(os.environ["BENCH_FIRST_STEP"], "w") as fh:
                fh.write(str(time.time() - start))
        return original(self, batch, logs)
    CallbackList.on_train_batch_end = on_train_batch_end
    target, sys.argv = sys.argv[1], sys.argv[1:]
    if target == "kexp":
        runpy.run_module("kexp", run_name="__main__")
    else:
        runpy.run_path(target, run_name="__main__")
""")

# The same experiment written by hand: seeded split, tf.data pipeline, model, fit, save,
# evaluate. Paths and numbers are filled in from the kexp config.
PLAIN = textwrap.dedent("""
    import numpy as np, keras, tensorflow as tf
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
    model.fit(dataset(x[fit], y[fit], True), validation_data=dataset(x[val], y[val], False),
              epochs={epochs}, verbose=0)
    model.save("{out}/model.keras")
    print(model.evaluate(dataset(test["images"], test["labels"], False), return_dict=True,
                         verbose=0))
""")


def kexp_config(tmp: Path, epochs: int, lean: bool) -> Path:
    data = yaml.safe_load(CONFIG.read_text())
    for split in ("train", "test"):
        data["data"][split]["path"] = str((CONFIG.parent / data["data"][split]["path"]).resolve())
    data["train"] = {"epochs": epochs}
    data["callbacks"] = []  # fixed epochs: no early stopping in either program
    data["output"] = {"root": str(tmp / "experiments")}
    if lean:
        data["output"].update(formats=["keras"], tensorboard=False)
        data["checkpoint"] = {"save_best": False, "save_last": False}
    path = tmp / ("lean.yaml" if lean else "kexp.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def plain_script(tmp: Path, epochs: int) -> Path:
    data = yaml.safe_load(CONFIG.read_text())
    out = tmp / "plain"
    out.mkdir(exist_ok=True)
    path = tmp / "plain.py"
    path.write_text(PLAIN.format(
        seed=data["seed"], train=(CONFIG.parent / data["data"]["train"]["path"]).resolve(),
        test=(CONFIG.parent / data["data"]["test"]["path"]).resolve(),
        val=data["data"]["validation"]["split"], batch=data["data"]["batch_size"],
        epochs=epochs, out=out,
    ))
    return path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(args: list[str], tmp: Path) -> tuple[float, float, float]:
    """Whole-process wall seconds, seconds to the end of the first training step, and the
    process's CPU seconds (steadier than wall time on a busy machine)."""
    marker = tmp / "first_step"
    marker.unlink(missing_ok=True)
    cpu = _children_cpu()
    start = time.time()
    env = {**ENV, "BENCH_START": repr(start), "BENCH_FIRST_STEP": str(marker)}
    done = subprocess.run([sys.executable, "-c", HARNESS, *args], env=env, cwd=tmp,
                          capture_output=True, text=True)
    elapsed = time.time() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, float(marker.read_text()), _children_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kexp-bench-") as name:
        tmp = Path(name)
        programs = {
            "plain": [str(plain_script(tmp, options.epochs))],
            "kexp": ["kexp", "train", str(kexp_config(tmp, options.epochs, lean=False))],
            "kexp-lean": ["kexp", "train", str(kexp_config(tmp, options.epochs, lean=True))],
        }
        timed(programs["plain"], tmp)  # warm the file cache and the bytecode, not measured
        timed(programs["kexp"], tmp)
        results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in programs}
        for pair in range(options.pairs):
            order = list(programs) if pair % 2 == 0 else list(reversed(programs))
            for key in order:
                results[key].append(timed(programs[key], tmp))
            line = "  ".join(f"{k} {results[k][-1][0]:6.2f}s" for k in programs)
            print(f"pair {pair + 1}/{options.pairs}: {line}", flush=True)

    plain = results["plain"]
    summary = {}
    print(f"\n{options.pairs} pairs, {options.epochs} epochs of the digits CNN "
          f"({os.cpu_count()} CPUs, {sys.platform})")
    print(f"{'program':<10} {'wall s':>7} {'first step s':>13} {'ratio':>7} {'CPU s':>7} "
          f"{'CPU ratio':>9}   (medians; ratios per pair against plain)")
    for key, values in results.items():
        summary[key] = {
            "wall_s": statistics.median(v[0] for v in values),
            "first_step_s": statistics.median(v[1] for v in values),
            "ratio": statistics.median(v[0] / p[0] for v, p in zip(values, plain)),
            "cpu_s": statistics.median(v[2] for v in values),
            "cpu_ratio": statistics.median(v[2] / p[2] for v, p in zip(values, plain)),
        }
        s = summary[key]
        print(f"{key:<10} {s['wall_s']:7.2f} {s['first_step_s']:13.2f} {s['ratio']:7.3f} "
              f"{s['cpu_s']:7.2f} {s['cpu_ratio']:9.3f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
