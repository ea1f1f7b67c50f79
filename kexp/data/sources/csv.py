"""``source: csv``: a table with a header row; feature and label columns chosen by name.

    train: {source: csv, path: data/iris_train.csv, label: species_id,
            features: [sepal_length, sepal_width, petal_length, petal_width]}
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from kexp.config.schema import CsvSource
from kexp.data.arrays import Arrays
from kexp.errors import ConfigError, KeyPath, nearest


def read_table(path: Path, delimiter: str, at: KeyPath) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a csv file; a missing file or ragged row is a config error."""
    if not path.is_file():
        raise ConfigError.single(at + ("path",), f"file not found: {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if not header:
            raise ConfigError.single(at + ("path",), f"{path.name} is empty (no header row)")
        header = [h.strip() for h in header]
        rows = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ConfigError.single(
                    at + ("path",),
                    f"{path.name} line {line} has {len(row)} fields, the header has {len(header)}",
                )
            rows.append(row)
    return header, rows


def columns_matrix(
    header: list[str], rows: list[list[str]], names: list[str], dtype: str,
    at: KeyPath, file: Path,
) -> np.ndarray:
    """The named columns as a numeric matrix; unknown columns and non-numbers are config errors."""
    index = []
    for i, name in enumerate(names):
        if name not in header:
            raise ConfigError.single(
                at + (i,) if len(at) and at[-1] == "features" else at,
                f"no column '{name}' in {file.name} (columns: {', '.join(header)})",
                suggestion=nearest(name, header),
            )
        index.append(header.index(name))
    out = np.empty((len(rows), len(index)), dtype=dtype)
    for r, row in enumerate(rows):
        for c, i in enumerate(index):
            cell = row[i].strip()
            try:
                out[r, c] = float(cell)
            except ValueError:
                what = "empty (missing value)" if not cell else f"not a number: {cell!r}"
                raise ConfigError.single(
                    at, f"{file.name} line {r + 2}, column '{header[i]}' is {what}"
                ) from None
    return out


def load_csv(spec: CsvSource, path: KeyPath) -> Arrays:
    """Features and label(s) from a csv file with a header row."""
    file = Path(spec.path)
    header, rows = read_table(file, spec.delimiter, path)
    labels = [spec.label] if isinstance(spec.label, str) else list(spec.label or [])
    features = spec.features if spec.features is not None else [
        h for h in header if h not in labels
    ]
    if not features:
        raise ConfigError.single(path + ("features",), "no feature columns left")
    x = columns_matrix(header, rows, features, spec.dtype, path + ("features",), file)
    y = None
    if labels:
        y = columns_matrix(header, rows, labels, "float32", path + ("label",), file)
        if isinstance(spec.label, str):
            y = y[:, 0]
            if np.all(y == np.round(y)):
                y = y.astype("int64")
    return Arrays(x, y, [str(file)]).check(path)
