"""Train / validation / test splits, each from its own source or as a seeded fraction of train.

A fraction split is a permutation of the training examples drawn from the run's seed, so the
same config and seed always give the same split; the indices are saved in the run directory
(``splits.npz``) so that ``kexp evaluate`` uses exactly the examples the run held out. The same
holds for sources that tf.data streams (:class:`~kexp.data.stream.Stream`): the indices are
positions in the source's stable order.

Validation and test sources are read with the training split's class names, so a label id
means the same class in every split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kexp.config.schema import DataSection, SplitSpec
from kexp.data.arrays import Arrays
from kexp.data.sources import SourceContext, load_source
from kexp.errors import ConfigError

#: A split's examples: in memory (Arrays) or read by tf.data (kexp.data.stream.Stream).
Examples = Any


@dataclass
class Splits:
    """The examples of each split, the files read, and how fraction splits were made."""

    train: Examples
    validation: Examples | None = None
    test: Examples | None = None
    indices: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str] | None:
        """Names of the label ids, from the training source (None when it names none)."""
        return self.train.class_names

    @property
    def files(self) -> list[str]:
        seen: list[str] = []
        for arrays in (self.train, self.validation, self.test):
            for f in arrays.files if arrays is not None else []:
                if f not in seen:
                    seen.append(f)
        return seen

    def record(self) -> dict[str, Any]:
        """Counts per split (for the manifest)."""
        out: dict[str, Any] = {}
        for name in ("train", "validation", "test"):
            arrays = getattr(self, name)
            if arrays is not None:
                out[name] = {
                    "examples": len(arrays),
                    "from": "fraction of train" if name in self.indices else "source",
                    "read": "in memory" if isinstance(arrays, Arrays) else "tf.data stream",
                }
        return out

    def save_indices(self, path: Path) -> None:
        """Write the fraction-split indices (``np.savez``); nothing when there are none."""
        if self.indices:
            from kexp.training.artifacts import atomic_path  # never a torn file (run integrity)

            with atomic_path(path) as tmp, tmp.open("wb") as handle:
                np.savez(handle, **self.indices)


def fraction_indices(n: int, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Disjoint index sets for each fraction plus ``train`` for the rest, from ``seed``.

    >>> parts = fraction_indices(10, {"validation": 0.2}, seed=0)
    >>> len(parts["validation"]), len(parts["train"])
    (2, 8)
    """
    order = np.random.default_rng(seed).permutation(n)
    out: dict[str, np.ndarray] = {}
    start = 0
    for name, fraction in fractions.items():
        count = max(1, int(round(fraction * n)))
        out[name] = np.sort(order[start : start + count])
        start += count
    out["train"] = np.sort(order[start:])
    return out


def load_splits(
    data: DataSection, seed: int, wanted: tuple[str, ...] = ("train", "validation", "test"),
    saved_indices: dict[str, np.ndarray] | None = None,
) -> Splits:
    """Read every split the config declares (only those in ``wanted`` that are sources).

    ``saved_indices`` (from a run's ``splits.npz``) replaces re-drawing fraction splits.
    """
    full_train = load_source(data.train, ("data", "train"))
    context = SourceContext(class_names=full_train.class_names)
    fractions = {
        name: spec.split
        for name in ("validation", "test")
        if isinstance(spec := getattr(data, name), SplitSpec)
    }
    indices: dict[str, np.ndarray] = {}
    if fractions:
        indices = dict(saved_indices) if saved_indices else fraction_indices(
            len(full_train), fractions, seed
        )
        _check_saved(indices, len(full_train))
    splits = Splits(
        train=full_train.take(indices["train"]) if indices else full_train, indices=indices
    )
    for name in ("validation", "test"):
        spec = getattr(data, name)
        if spec is None or name not in wanted:
            continue
        if isinstance(spec, SplitSpec):
            setattr(splits, name, full_train.take(indices[name]))
        else:
            setattr(splits, name, load_source(spec, ("data", name), context))
    return splits


def _check_saved(indices: dict[str, np.ndarray], n: int) -> None:
    """Saved split indices must still fit the training source (it may have changed since)."""
    top = max((int(v.max()) for v in indices.values() if v.size), default=-1)
    if top >= n:
        raise ConfigError.single(
            ("data", "train"),
            f"the run's saved splits (splits.npz) index example {top}, but the training "
            f"source now has {n} examples: the data changed since the run",
        )
