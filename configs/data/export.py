"""Export the small public datasets shipped in ``configs/data/``.

This script needs scikit-learn (it reads scikit-learn's bundled copies of the
UCI datasets). It is a one-off maintenance tool: kexp does NOT import it and
does NOT depend on scikit-learn at runtime; the training configs only read the
files this script writes.

Run from anywhere:

    python configs/data/export.py

Outputs (next to this file):

    digits_train.npz, digits_test.npz
    iris_train.csv, iris_test.csv
    breast_cancer_train.csv, breast_cancer_test.csv

The output is reproducible: the split uses only numpy with a fixed seed, CSV
floats are written with the shortest round-tripping repr, and the .npz files
are written with fixed zip timestamps, so re-running gives byte-identical files.
"""

from __future__ import annotations

import csv
import hashlib
import zipfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_iris

SEED = 20261203
TEST_FRACTION = 0.2
OUT_DIR = Path(__file__).resolve().parent

# Fixed zip member timestamp (the zip epoch) so .npz files are byte-identical
# across runs. np.savez stamps members with the current local time.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


def stratified_split(y: np.ndarray, seed: int = SEED,
                     test_fraction: float = TEST_FRACTION):
    """Return (train_idx, test_idx), each sorted ascending.

    For every class (in ascending label order) its indices are shuffled with a
    single numpy Generator seeded with ``seed`` and the first
    round(test_fraction * n_class) go to the test split.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(idx.size)]
        n_test = int(round(test_fraction * idx.size))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def savez_deterministic(path: Path, **arrays: np.ndarray) -> None:
    """Same layout as ``np.savez`` (uncompressed ZIP_STORED members written
    with ``np.lib.format.write_array``, zip64 forced), but with a fixed member
    timestamp so the file is reproducible. Loadable with ``np.load``."""
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED,
                         allowZip64=True) as zf:
        for key, val in arrays.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=_ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_STORED
            with zf.open(info, "w", force_zip64=True) as fid:
                np.lib.format.write_array(fid, np.asanyarray(val),
                                          allow_pickle=False)


def write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def fmt(x) -> str:
    """Shortest repr that round-trips the float64 exactly (e.g. 5.1)."""
    return repr(float(x))


def export_digits() -> None:
    d = load_digits()
    raw = d.images.astype(np.float64)            # (1797, 8, 8), values 0..16
    labels = d.target.astype(np.int64)
    flat = raw.reshape(len(raw), -1)
    stats = np.stack([
        flat.mean(axis=1),
        flat.std(axis=1),                         # population std (ddof=0)
        flat.max(axis=1),
        (flat != 0).mean(axis=1),
    ], axis=1).astype(np.float32)
    images = raw[..., None].astype(np.float32)   # (N, 8, 8, 1)
    parity = (labels % 2).astype(np.int64)
    train, test = stratified_split(labels)
    for name, idx in (("train", train), ("test", test)):
        savez_deterministic(
            OUT_DIR / f"digits_{name}.npz",
            images=images[idx], labels=labels[idx],
            parity=parity[idx], stats=stats[idx])


def export_iris() -> None:
    d = load_iris()
    X, y = d.data, d.target.astype(np.int64)
    names = [str(n) for n in d.target_names]
    header = ["sepal_length", "sepal_width", "petal_length", "petal_width",
              "species", "species_id"]
    train, test = stratified_split(y)
    for split, idx in (("train", train), ("test", test)):
        rows = ([fmt(v) for v in X[i]] + [names[y[i]], str(int(y[i]))]
                for i in idx)
        write_csv(OUT_DIR / f"iris_{split}.csv", header, rows)


def snake(name: str) -> str:
    return "_".join(name.strip().lower().split())


def export_breast_cancer() -> None:
    d = load_breast_cancer()
    X = d.data
    assert list(d.target_names) == ["malignant", "benign"]
    malignant = (d.target == 0).astype(np.int64)  # sklearn: 0=malignant
    header = [snake(n) for n in d.feature_names] + ["malignant"]
    assert len(set(header)) == 31
    train, test = stratified_split(malignant)
    for split, idx in (("train", train), ("test", test)):
        rows = ([fmt(v) for v in X[i]] + [str(int(malignant[i]))]
                for i in idx)
        write_csv(OUT_DIR / f"breast_cancer_{split}.csv", header, rows)


OUTPUTS = [
    "digits_train.npz", "digits_test.npz",
    "iris_train.csv", "iris_test.csv",
    "breast_cancer_train.csv", "breast_cancer_test.csv",
]


def main() -> None:
    export_digits()
    export_iris()
    export_breast_cancer()
    for name in OUTPUTS:
        p = OUT_DIR / name
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        print(f"{digest}  {name}  ({p.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
