"""What resumability costs per training run: kexp's fit driver with its training state against
plain ``model.fit``, same model, same data, same epochs, in one process, measured in the same
run.

Run by hand (not in CI; timings depend on the machine and its load):

    python benchmarks/bench_resume_overhead.py                 # 5 rounds, 8 epochs
    python benchmarks/bench_resume_overhead.py --rounds 9 --epochs 20

Variants, each on a freshly built and seeded digits CNN (the shipped config's model):

* ``plain``       ``model.fit(dataset, epochs=E)``;
* ``kexp``        :func:`kexp.training.loop.fit_resumable` with the training state saved at
                  every epoch end (kexp's default) and the atomic ``history.csv`` writer;
* ``kexp-steps``  the same, with the state also saved every 10 steps
                  (``BackupAndRestore: {save_freq: 10}``).

Each round runs all variants in turn, in alternating order; ratios are per round against
``plain`` and the medians are printed (training time only: model building and tracing are in
both, imports and data loading are outside the timer). The final weights of ``kexp`` and
``kexp-steps`` are compared: saving the state changes no number. (``plain`` trains on another
shuffle order: Keras draws a new order per iterator it makes, kexp one per epoch of its
stream; see docs/reproducibility.md.)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "digits_cnn.yaml"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8)
    options = parser.parse_args()

    from kexp.tf import keras, tf
    from kexp.training.history import HistoryFile
    from kexp.training.loop import fit_resumable
    from kexp.training.state import TrainingState

    config = yaml.safe_load(CONFIG.read_text())
    seed, batch = config["seed"], config["data"]["batch_size"]
    train = np.load(CONFIG.parent / config["data"]["train"]["path"])
    x, y = train["images"].astype("float32"), train["labels"]
    steps = -(-len(x) // batch)
    tf.config.experimental.enable_op_determinism()

    def dataset() -> tf.data.Dataset:
        data = tf.data.Dataset.from_tensor_slices((x, y))
        data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        return data.batch(batch).prefetch(tf.data.AUTOTUNE)

    def model() -> keras.Model:
        keras.utils.set_random_seed(seed)
        built = keras.Sequential([
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
        built.compile(keras.optimizers.Adam(0.003), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return built

    def digest(trained: keras.Model) -> str:
        return hashlib.sha256(b"".join(np.asarray(w).tobytes()
                                       for w in trained.get_weights())).hexdigest()[:16]

    def plain(_: Path) -> str:
        trained = model()
        trained.fit(dataset(), epochs=options.epochs, verbose=0)
        return digest(trained)

    def kexp(folder: Path, save_freq: object = "epoch") -> str:
        trained = model()
        state = TrainingState(folder / "backup", save_freq=save_freq)
        fit_resumable(trained, dataset, epochs=options.epochs, steps_per_epoch=steps,
                      callbacks=[HistoryFile(folder / "history.csv")], state=state, verbose=0)
        return digest(trained)

    variants = {"plain": plain, "kexp": kexp, "kexp-steps": lambda f: kexp(f, save_freq=10)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    digests: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="kexp-bench-") as name:
        for key, run in variants.items():  # warm-up: the first tracing in a process is slower
            run(Path(name) / f"warm-{key}")
        for index in range(options.rounds):
            order = list(variants) if index % 2 == 0 else list(reversed(variants))
            for key in order:
                start = time.perf_counter()
                digests[key] = variants[key](Path(name) / f"{key}-{index}")
                times[key].append(time.perf_counter() - start)
            line = "  ".join(f"{k} {times[k][-1]:6.2f}s" for k in variants)
            print(f"round {index + 1}/{options.rounds}: {line}", flush=True)

    print(f"\n{options.rounds} rounds, {options.epochs} epochs x {steps} steps of the digits CNN "
          f"({os.cpu_count()} CPUs, {sys.platform})")
    print(f"{'variant':<11} {'seconds':>8} {'ratio':>7}   (medians; ratio per round vs plain)")
    for key, values in times.items():
        ratio = statistics.median(v / p for v, p in zip(values, times["plain"]))
        print(f"{key:<11} {statistics.median(values):8.2f} {ratio:7.3f}")
    same = digests["kexp"] == digests["kexp-steps"]
    print(f"final weights of kexp and kexp-steps equal: {same} ({digests})")


if __name__ == "__main__":
    main()
