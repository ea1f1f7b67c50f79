"""Export the Palmer penguins table into ``penguins_train.csv`` / ``penguins_test.csv``.

    pip install palmerpenguins==0.1.6   # ships penguins.csv; only this script needs it
    python configs/data/export_penguins.py

A one-off maintenance tool like ``export.py``: kexp never imports it. Rows are copied
byte-for-byte (missing values stay ``NA``); the split is the same stratified 80/20 procedure
as ``export.py`` (numpy Generator seeded 20261203, classes in sorted order), on the species.
"""

from __future__ import annotations

import argparse
import csv
import importlib.resources
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 20261203
TEST_FRACTION = 0.2


def stratified_split(labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows), each sorted: per class, shuffled, the first 20% to test."""
    y = np.asarray(labels)
    rng = np.random.default_rng(SEED)
    train, test = [], []
    for cls in sorted(set(labels)):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(idx.size)]
        n_test = int(round(TEST_FRACTION * idx.size))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def main(source: Path | None) -> None:
    if source is None:
        source = Path(str(importlib.resources.files("palmerpenguins") / "data" / "penguins.csv"))
    lines = source.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    species = [next(csv.reader([row]))[0] for row in rows]
    train, test = stratified_split(species)
    for name, index in (("train", train), ("test", test)):
        text = "\n".join([header, *(rows[i] for i in index)]) + "\n"
        (HERE / f"penguins_{name}.csv").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="penguins.csv (default: the package's)")
    main(parser.parse_args().source)
