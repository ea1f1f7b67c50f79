"""Train / validation / test splits, each from its own source or as a seeded fraction of train.

A fraction split is a permutation of the training examples drawn from the run's seed, so the
same config and seed always give the same split; the indices are saved in the run directory
(``splits.npz``) so that ``kexp evaluate`` uses exactly the examples the run held out. The same
holds for sources that tf.data streams (:class:`~kexp.data.stream.Stream`): the indices are
positions in the source's stable order.

Validation and test sources are read with the training split's class names, so a label id
means the same class in every split.

Reading a run's splits again (``kexp evaluate``) goes by what the run recorded
(:class:`Recorded`): the class names, and the files each TFRecord glob matched, so the test
split is the one the run held out even if the glob now matches more files; the training
source is read only when a fraction split is taken from it.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kexp.config.schema import DataSection, SplitSpec, TfrecordSource
from kexp.data.arrays import Arrays
from kexp.data.sources import SourceContext, load_source
from kexp.errors import ConfigError, KeyPath, UserError

#: A split's examples: in memory (Arrays) or read by tf.data (kexp.data.stream.Stream).
Examples = Any


@dataclass(frozen=True)
class Recorded:
    """What a run recorded about its data in ``manifest.json``, to read it again the same way."""

    #: Names of the label ids (from the training source); None when it named none.
    class_names: list[str] | None = None
    #: Per split read from a source: the files its TFRecord glob (or list) matched.
    files: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> "Recorded":
        splits = data.get("splits") or {}
        return cls(
            class_names=data.get("class_names"),
            files={name: list(record["files"]) for name, record in splits.items()
                   if isinstance(record, dict) and record.get("files") is not None},
        )


@dataclass
class Splits:
    """The examples of each split, the files read, and how fraction splits were made.

    ``train`` is None only when a run's test split was read again without it (a source of
    its own, class names from the run).
    """

    train: Examples | None
    validation: Examples | None = None
    test: Examples | None = None
    indices: dict[str, np.ndarray] = field(default_factory=dict)
    #: Class names of a run read again without its training source.
    recorded_class_names: list[str] | None = None

    @property
    def class_names(self) -> list[str] | None:
        """Names of the label ids, from the training source (None when it names none)."""
        if self.train is None:
            return self.recorded_class_names
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
                matched = getattr(arrays, "matched_files", None)
                if matched is not None and (name == "train" or name not in self.indices):
                    out[name]["files"] = list(matched)  # what evaluation reads again
        return out

    def save_indices(self, path: Path) -> None:
        """Write the fraction-split indices (``np.savez``); nothing when there are none."""
        if self.indices:
            from kexp.training.artifacts import atomic_path  # never a torn file (run integrity)

            with atomic_path(path) as tmp, tmp.open("wb") as handle:
                np.savez(handle, **self.indices)


def read_indices(path: Path) -> dict[str, np.ndarray] | None:
    """A run's saved split indices (``splits.npz``), None when it has none; a ``UserError``
    when the file is damaged (without it the held-out splits cannot be drawn again, and a
    ``BadZipFile`` traceback would not say so)."""
    if not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: np.asarray(npz[k], dtype=np.int64) for k in npz.files}
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(
            f"{path} (the run's split indices) is damaged and cannot be read "
            f"({type(exc).__name__}: {exc}); without it the examples the run held out for "
            "validation and test cannot be drawn again: start a new run"
        ) from exc


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
    if start >= n:  # each fraction takes at least one example, so a small source runs out
        taken = ", ".join(f"{len(v)} for {k}" for k, v in out.items())
        first = next(iter(fractions))
        raise ConfigError.single(
            ("data", first, "split"),
            f"the fractions leave no training examples: the training source has {n}, "
            f"{taken} (each fraction takes at least one); use smaller fractions or more data",
        )
    out["train"] = np.sort(order[start:])
    return out


def load_splits(
    data: DataSection, seed: int, wanted: tuple[str, ...] = ("train", "validation", "test"),
    saved_indices: dict[str, np.ndarray] | None = None, recorded: Recorded | None = None,
) -> Splits:
    """Read every split the config declares (only those in ``wanted`` that are sources).

    ``saved_indices`` (from a run's ``splits.npz``) replaces re-drawing fraction splits.
    ``recorded`` (a run read again): the training source is read only when ``wanted`` needs
    it (train itself, or a fraction split of it), class names come from the run, and a
    TFRecord source reads the files the run's glob matched.
    """
    fractions = {
        name: spec.split
        for name in ("validation", "test")
        if isinstance(spec := getattr(data, name), SplitSpec)
    }
    needs_train = recorded is None or "train" in wanted or any(n in wanted for n in fractions)
    if not needs_train:
        splits = Splits(train=None, recorded_class_names=recorded.class_names)
        context = SourceContext(class_names=recorded.class_names, after_training=True)
    else:
        full_train = _load(data.train, ("data", "train"), None, recorded)
        context = SourceContext(
            class_names=recorded.class_names if recorded is not None else full_train.class_names,
            after_training=True)
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
            setattr(splits, name, full_train.take(splits.indices[name]))
        else:
            setattr(splits, name, _load(spec, ("data", name), context, recorded))
    return splits


def _load(spec: Any, at: KeyPath, context: SourceContext | None,
          recorded: Recorded | None) -> Examples:
    """Read one source; for a run read again, a TFRecord source reads the files it read."""
    name = at[-1]
    if recorded is not None and isinstance(spec, TfrecordSource) and name in recorded.files:
        from kexp.data.sources.tfrecord import pinned

        spec = pinned(spec, recorded.files[name], at)
    return load_source(spec, at, context)


def _check_saved(indices: dict[str, np.ndarray], n: int) -> None:
    """Saved split indices must still fit the training source (it may have changed since)."""
    top = max((int(v.max()) for v in indices.values() if v.size), default=-1)
    if top >= n:
        raise ConfigError.single(
            ("data", "train"),
            f"the run's saved splits (splits.npz) index example {top}, but the training "
            f"source now has {n} examples: the data changed since the run",
        )
