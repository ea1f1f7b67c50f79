"""In-memory (or memory-mapped) examples: features and labels as numpy arrays.

Sources read files into :class:`Arrays`; splits slice them; the pipeline turns them into a
``tf.data.Dataset``. A multi-input or multi-output model has dicts keyed by input/output name.
Sources that tf.data reads file by file give a :class:`~kexp.data.stream.Stream` instead; both
offer the same small interface (``len``, ``take``, ``head``, ``dataset``, ``files``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from kexp.errors import ConfigError, KeyPath

Tensors = Union[np.ndarray, dict[str, np.ndarray]]


def _length(tensors: Tensors) -> int:
    if isinstance(tensors, dict):
        return len(next(iter(tensors.values())))
    return len(tensors)


def _take(tensors: Tensors, index: np.ndarray) -> Tensors:
    if isinstance(tensors, dict):
        return {k: np.asarray(v[index]) for k, v in tensors.items()}
    return np.asarray(tensors[index])


#: Bytes of an array checked at once (NaN, whole labels): memory stays bounded for a
#: memory-mapped file of any size.
BLOCK_BYTES = 1 << 24


def _blocks(array: np.ndarray) -> Any:
    """``(start, rows)`` of ``array`` in blocks of about BLOCK_BYTES."""
    row_bytes = max(1, int(np.prod(np.shape(array)[1:], dtype=np.int64)) * array.dtype.itemsize)
    step = max(1, BLOCK_BYTES // row_bytes)
    for start in range(0, len(array), step):
        yield start, array[start : start + step]


def _nonfinite(array: np.ndarray) -> tuple[int, tuple[int, ...]] | None:
    """``(count, index of the first)`` of the NaN and infinite values of a float array."""
    if np.asarray(array[:0]).dtype.kind not in "fc":
        return None
    count, first = 0, None
    for start, block in _blocks(array):
        bad = ~np.isfinite(block)
        n = int(np.count_nonzero(bad))
        if n:
            if first is None:
                index = np.unravel_index(int(np.argmax(bad)), bad.shape)
                first = (start + int(index[0]), *map(int, index[1:]))
            count += n
    return None if first is None else (count, first)


def nonfinite(x: Tensors, y: Tensors | None, path: KeyPath, key: KeyPath | None = None,
              positions: np.ndarray | None = None) -> ConfigError | None:
    """The ConfigError for the NaN and infinite values of float features ``x`` and labels
    ``y`` (how many, where the first is), or None. At ``path + key``, or by default at
    ``path`` + ``x``/``y`` and the input or output name. ``positions``: the source position
    of each example, when they are not ``0, 1, ...`` (a split of a stream)."""
    for role, tensors in (("x", x), ("y", y)):
        items = tensors.items() if isinstance(tensors, dict) else [(None, tensors)]
        for name, array in items if tensors is not None else []:
            found = _nonfinite(array)
            if found is None:
                continue
            count, first = found
            row = int(positions[first[0]]) if positions is not None else first[0]
            what = ("features" if role == "x" else "labels") + (f" '{name}'" if name else "")
            where = f"example {row}" + (
                f" (at index {[row, *first[1:]]})" if len(first) > 1 else "")
            return ConfigError.single(
                path + (key if key is not None else ((role, name) if name else (role,))),
                f"{what}: {count} NaN or infinite value(s), the first in {where}; "
                "a model trained on them has NaN weights: replace or remove them",
            )
    return None


@dataclass
class Arrays:
    """Features ``x`` and optional labels ``y`` with the same number of examples."""

    x: Tensors
    y: Tensors | None
    files: list[str] = field(default_factory=list)
    #: Label names, index = label id (csv string labels, keras loaders); None when unnamed.
    class_names: list[str] | None = None
    #: A name per example (e.g. its file), shown next to predictions; None when unnamed.
    names: list[str] | None = None

    def __len__(self) -> int:
        return _length(self.x)

    @property
    def has_labels(self) -> bool:
        return self.y is not None

    def take(self, index: np.ndarray) -> "Arrays":
        """The examples at ``index`` (a copy, so a memory map is not held open by a split)."""
        names = None if self.names is None else [self.names[i] for i in index]
        return Arrays(_take(self.x, index), None if self.y is None else _take(self.y, index),
                      list(self.files), self.class_names, names)

    def head(self, n: int) -> tuple[Tensors, Tensors | None]:
        """The first ``n`` examples as numpy ``(x, y)`` (for checks before training)."""
        index = np.arange(min(n, len(self)))
        return _take(self.x, index), None if self.y is None else _take(self.y, index)

    def labels_of(self, output: str | None = None) -> np.ndarray | None:
        """The label array of ``output`` (labels keyed by output name), or the single label
        array when ``output`` is None; None when there is none."""
        y = self.y
        if isinstance(y, dict):
            y = y.get(output) if output is not None else None
        return None if y is None or not np.size(y) else y

    def label_range(self, output: str | None = None) -> tuple[float, float] | None:
        """Smallest and largest label of one numeric label array (sparse-label checks):
        the single one, or ``output``'s."""
        y = self.labels_of(output)
        if y is None:
            return None
        y = np.asarray(y)
        if y.dtype.kind not in "biuf":
            return None
        return float(y.min()), float(y.max())

    def fractional_label(self, output: str | None = None) -> tuple[int, float] | None:
        """``(example, value)`` of the first label of one numeric label array (the single one,
        or ``output``'s) that is not a whole number, or None: class ids (sparse labels) must
        be whole, and Keras casts a label 1.5 to the class 1 without a word."""
        y = self.labels_of(output)
        if y is None or np.asarray(y).dtype.kind != "f":
            return None
        for start, block in _blocks(y):
            flat = np.asarray(block, dtype=np.float64).reshape(len(block), -1)
            fractional = flat != np.round(flat)
            if fractional.any():
                row, column = np.unravel_index(int(np.argmax(fractional)), fractional.shape)
                return start + int(row), float(flat[row, column])
        return None

    def with_class_ids(self, context: Any, at: KeyPath) -> "Arrays":
        """String labels (a single label array of text) as class ids, like a csv string label:
        in the sorted order of the values, or of the training split's class names
        (``context``, a :class:`~kexp.data.sources.SourceContext`, for validation and test;
        a label they lack is an error at ``at``).

        Labels that are already numbers are kept as they are.
        """
        y = self.y
        if y is None:
            return self
        if isinstance(y, dict):
            for name, labels in y.items():
                if np.asarray(labels).dtype.kind in "US":
                    raise ConfigError.single(
                        at + (name,), f"the labels of output '{name}' are text: class names "
                        "are read from a single label array only; store class ids (integers)")
            return self
        y = np.asarray(y)
        if y.dtype.kind not in "US":
            return self
        values = np.char.decode(y, "utf-8") if y.dtype.kind == "S" else y
        seen = [str(v) for v in np.unique(values)]
        known = context.known_classes(at) if context is not None else None
        names = seen if known is None else list(known)
        unknown = [v for v in seen if v not in names]
        if unknown:
            raise ConfigError.single(
                at, f"label(s) {', '.join(map(repr, unknown[:5]))} that the training data does "
                f"not have (classes: {', '.join(names)})")
        order = np.argsort(np.asarray(names))  # every value is a name: found where sorted
        ids = order[np.searchsorted(np.asarray(names)[order], values)]
        return Arrays(self.x, np.asarray(ids, dtype=np.int64), list(self.files), names,
                      self.names)

    def dataset(self) -> Any:
        """The examples as an unbatched ``tf.data.Dataset`` of ``x`` or ``(x, y)``."""
        from kexp.tf import tf

        return tf.data.Dataset.from_tensor_slices(self.x if self.y is None else (self.x, self.y))

    def check(self, path: KeyPath, key: KeyPath | None = None) -> "Arrays":
        """Raise ConfigError at ``path`` when the arrays disagree on the number of examples,
        or hold NaN or infinity (:meth:`check_finite`, at ``path + key`` if given)."""
        sizes: dict[str, int] = {}
        for role, tensors in (("x", self.x), ("y", self.y)):
            if tensors is None:
                continue
            items = tensors.items() if isinstance(tensors, dict) else [(None, tensors)]
            for name, array in items:
                if np.ndim(array) == 0:
                    raise ConfigError.single(
                        path + ((role, name) if name else (role,)),
                        "is a scalar, not an array of examples",
                    )
                sizes[f"{role}[{name}]" if name else role] = len(array)
        if len(set(sizes.values())) > 1:
            detail = ", ".join(f"{k} has {v}" for k, v in sizes.items())
            raise ConfigError.single(
                path, f"features and labels have different numbers of examples: {detail}"
            )
        if sizes and not next(iter(sizes.values())):
            raise ConfigError.single(path, "has no examples")
        self.check_finite(path, key)
        return self

    def check_finite(self, path: KeyPath, key: KeyPath | None = None) -> None:
        """Raise ConfigError when a float array holds NaN or infinity.

        One NaN feature turns the first layer's weights NaN while the loss can stay finite
        (iris plus one NaN row, 2 epochs of Keras' own fit: NaN kernel, finite loss), so the
        run completes with a poisoned model and neither the loss nor ``terminate_on_nan``
        shows it. The error is at
        ``path + key`` (default: ``x``/``y`` and the input or output name) and says how many
        there are and where the first is. One vectorised pass, in blocks of a few MB, so a
        memory-mapped file is read once without being copied.
        """
        error = nonfinite(self.x, self.y, path, key)
        if error is not None:
            raise error
