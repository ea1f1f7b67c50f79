"""Data sources: each reads one kind of file into :class:`~kexp.data.arrays.Arrays`."""

from __future__ import annotations

from typing import Any, Callable

from kexp.config.schema import CsvSource, NpySource, NpzSource
from kexp.data.arrays import Arrays
from kexp.data.sources.csv import load_csv
from kexp.data.sources.npz import load_npy, load_npz
from kexp.errors import KeyPath

LOADERS: dict[type, Callable[[Any, KeyPath], Arrays]] = {
    NpzSource: load_npz,
    NpySource: load_npy,
    CsvSource: load_csv,
}


def load_source(spec: Any, path: KeyPath) -> Arrays:
    """Read the examples a source spec declares."""
    return LOADERS[type(spec)](spec, path)
