"""Is kexp's input pipeline ever the bottleneck? Steps per second by source, against memory.

    python benchmarks/bench_data_pipeline.py [--copies 8] [--epochs 4] [--batch-size 64]

Run by hand (not in CI). The shipped digits, repeated ``--copies`` times, are written as an
npz, a csv (64 pixel columns + label), a folder of PNGs per class and a GZIP TFRecord file.
The same small CNN (same initial weights) is trained on each through kexp's own code path
(``load_splits`` + ``make_dataset``, cache on), and once with plain Keras on the numpy arrays
already in memory (``model.fit(x, y)``). Steady state is epochs 2.. (epoch 1 reads,
decodes and fills the cache); a figure is the median over those epochs. Each round measures
in-memory, every source, then in-memory again; a source's ratio in a round is against the mean
of that round's two in-memory runs, and the table shows the median over ``--rounds`` rounds,
both for wall-clock steps/s and for CPU time per step (the process's CPU seconds, which other
work on a shared machine disturbs less). Target: every source >= 0.95 of in-memory.
"""

from __future__ import annotations

import argparse
import csv
import os
import runpy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kexp.config.schema import DataSection  # noqa: E402
from kexp.data.pipeline import make_dataset  # noqa: E402
from kexp.data.splits import load_splits  # noqa: E402
from kexp.tf import keras  # noqa: E402

SEED = 7


class EpochTimer(keras.callbacks.Callback):
    """Wall time and process CPU time of each epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.cpu: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.times.append(time.perf_counter() - self.start)
        self.cpu.append(time.process_time() - self.cpu_start)


def model(flat: bool = False) -> Any:
    """The CNN; ``flat`` takes a row of 64 pixels (csv) and reshapes it first."""
    keras.utils.set_random_seed(SEED)
    net = keras.Sequential([
        *([keras.Input((64,)), keras.layers.Reshape((8, 8, 1))] if flat else [keras.Input((8, 8, 1))]),
        keras.layers.Rescaling(1 / 16),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    net.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return net


def write_sources(folder: Path, copies: int) -> tuple[np.ndarray, np.ndarray, dict[str, dict]]:
    """The repeated digits in every format, and the kexp source spec of each."""
    with np.load(REPO / "configs" / "data" / "digits_train.npz") as data:
        images = np.concatenate([data["images"]] * copies)
        labels = np.concatenate([data["labels"]] * copies)
    np.savez(folder / "digits.npz", images=images, labels=labels)
    with (folder / "digits.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"p{i}" for i in range(64)] + ["label"])
        for image, label in zip(images, labels):
            writer.writerow([f"{v:g}" for v in image.ravel()] + [int(label)])
    digits = runpy.run_path(str(REPO / "configs" / "data" / "write_digits.py"))
    pngs = digits["png_bytes"](images)
    digits["write_png_folder"](pngs, labels, folder / "png")
    digits["write_tfrecord"](images, pngs, labels, folder / "digits.tfrecord.gz")
    pixel_columns = [f"p{i}" for i in range(64)]
    specs = {
        "npz": {"source": "npz", "path": str(folder / "digits.npz"), "x": "images", "y": "labels"},
        "csv": {"source": "csv", "path": str(folder / "digits.csv"), "label": "label",
                "features": pixel_columns},
        "csv (streamed)": {"source": "csv", "path": str(folder / "digits.csv"), "label": "label",
                           "features": pixel_columns, "stream": True},
        "image_dir": {"source": "image_dir", "path": str(folder / "png"), "image_size": [8, 8],
                      "color_mode": "grayscale"},
        "tfrecord": {"source": "tfrecord", "files": str(folder / "digits.tfrecord.gz"),
                     "compression": "gzip", "x": "pixels", "y": "label",
                     "features": {"pixels": {"shape": [8, 8, 1]}, "label": {"dtype": "int64"}}},
    }
    return images, labels, specs


def steady(timer: EpochTimer, steps: int) -> tuple[float, float]:
    """Median steps per second and median CPU seconds per step, over epochs 2.. ."""
    return steps / statistics.median(timer.times[1:]), statistics.median(timer.cpu[1:]) / steps


def bench_memory(images: np.ndarray, labels: np.ndarray,
                 args: argparse.Namespace) -> tuple[float, float]:
    timer = EpochTimer()
    model().fit(images, labels, batch_size=args.batch_size, epochs=args.epochs, shuffle=True,
                callbacks=[timer], verbose=0)
    return steady(timer, -(-len(images) // args.batch_size))


def bench_source(spec: dict, args: argparse.Namespace) -> tuple[float, float]:
    data = DataSection.model_validate({"train": spec, "batch_size": args.batch_size})
    train = load_splits(data, SEED).train
    feed = make_dataset(train, args.batch_size, training=True, seed=SEED, cache=True)
    timer = EpochTimer()
    model(flat=spec["source"] == "csv").fit(feed, epochs=args.epochs, callbacks=[timer],
                                            shuffle=False, verbose=0)  # the pipeline shuffles
    return steady(timer, -(-len(train) // args.batch_size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=8, help="times the digits are repeated")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    cpu_ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        images, labels, specs = write_sources(Path(tmp), args.copies)
        print(f"{len(images)} examples, batch {args.batch_size}, {args.epochs} epochs, steady "
              f"state = epochs 2..{args.epochs}, median of {args.rounds} rounds")
        for _ in range(args.rounds):
            before = bench_memory(images, labels, args)
            measured = {name: bench_source(spec, args) for name, spec in specs.items()}
            after = bench_memory(images, labels, args)
            memory = ((before[0] + after[0]) / 2, (before[1] + after[1]) / 2)
            measured = {"in memory": memory, **measured}
            for name, (rate, cpu) in measured.items():
                rates.setdefault(name, []).append(rate)
                ratios.setdefault(name, []).append(rate / memory[0])
                cpu_ratios.setdefault(name, []).append(memory[1] / cpu)
    print(f"{'source':<16} {'steps/s':>8} {'vs memory':>10} {'CPU/step vs memory':>19}   "
          "wall ratio per round")
    for name in rates:
        shown = ", ".join(f"{v:.2f}" for v in ratios[name])
        print(f"{name:<16} {statistics.median(rates[name]):8.1f} "
              f"{statistics.median(ratios[name]):10.2f} "
              f"{statistics.median(cpu_ratios[name]):19.2f}   {shown}")


if __name__ == "__main__":
    main()
