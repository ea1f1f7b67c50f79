"""Examples that tf.data reads from their files: image and text folders, TFRecords, TFDS,
a streamed csv, a ``tf.data.Dataset`` from a user function.

A :class:`Stream` never holds the examples in memory; it knows how to build the unbatched
dataset, how many examples there are, and which positions of that (stable) order it keeps.
A fraction split of a stream is a set of positions, drawn from the seed exactly as for
in-memory arrays, so ``kexp evaluate`` can rebuild the same held-out examples from
``splits.npz``. It offers the same small interface as :class:`~kexp.data.arrays.Arrays`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from kexp.tf import tf

#: What TF's in-memory ``cache()`` takes per example beyond the bytes of its tensors, and per
#: tensor of an example: measured with TF 2.21 on Linux (1M examples of one to ten small
#: tensors: 200-500 bytes per example, ~30 more per tensor), rounded up. An estimate for the
#: cache decision (kexp.data.pipeline), not a promise.
EXAMPLE_OVERHEAD = 512
TENSOR_OVERHEAD = 64

#: Examples read to estimate the size of one (the rest are assumed alike).
MEASURED_EXAMPLES = 16


def _to_numpy(tensors: Any) -> Any:
    if isinstance(tensors, dict):
        return {k: _to_numpy(v) for k, v in tensors.items()}
    return np.asarray(tensors)


def _leaves(tensors: Any) -> list[np.ndarray]:
    if tensors is None:
        return []
    if isinstance(tensors, dict):
        return [leaf for v in tensors.values() for leaf in _leaves(v)]
    return [np.asarray(tensors)]


def _payload(array: np.ndarray) -> int:
    """Bytes of an array's values (a string tensor's are its strings, not the pointers)."""
    if array.dtype == object:
        return sum(len(v) for v in array.ravel()) + 32 * array.size  # + tstring headers
    return int(array.nbytes)


@dataclass
class Stream:
    """An unbatched ``tf.data.Dataset`` in a stable order, and the positions a split keeps."""

    #: Builds the dataset of ``x`` or ``(x, y)`` elements, same order every time.
    build: Callable[[], Any]
    #: Number of examples the source has (before any selection).
    length: int
    has_labels: bool
    files: list[str] = field(default_factory=list)
    class_names: list[str] | None = None
    names: list[str] | None = None
    #: Sorted positions kept by a fraction split; None keeps every example.
    selection: np.ndarray | None = None
    #: How many files tf.data reads from (a file-based shard policy needs several).
    source_files: int = 1
    #: The files a glob or list of them matched (TFRecords): recorded in the run, so that
    #: reading it again reads these, whatever the glob matches by then. None otherwise.
    matched_files: list[str] | None = None
    #: Estimated bytes per example in a memory cache (measured once, by memory_estimate).
    example_bytes: float | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return self.length if self.selection is None else len(self.selection)

    def take(self, index: np.ndarray) -> "Stream":
        """The examples at positions ``index`` of this stream (positions of what it keeps)."""
        index = np.asarray(index, dtype=np.int64)
        chosen = index if self.selection is None else self.selection[index]
        names = None if self.names is None else [self.names[i] for i in index]
        return replace(self, selection=np.sort(chosen), names=names)

    def dataset(self) -> Any:
        """The examples, with the positions a split left out filtered away.

        The count is asserted, so Keras knows the steps of an epoch from the start (and a
        source whose files changed under a running job fails instead of silently shrinking).
        """
        dataset = self.build()
        if self.selection is not None:
            keep = np.zeros(self.length, dtype=bool)
            keep[self.selection] = True
            mask = tf.constant(keep)
            dataset = (
                dataset.enumerate()
                .filter(lambda i, element: tf.gather(mask, i))
                .map(lambda i, element: element)
            )
        return dataset.apply(tf.data.experimental.assert_cardinality(len(self)))

    def head(self, n: int) -> tuple[Any, Any]:
        """The first ``n`` examples as numpy ``(x, y)`` (``y`` is None without labels)."""
        batch = next(iter(self.dataset().batch(max(1, min(n, len(self))))))
        if self.has_labels:
            x, y = batch
            return _to_numpy(x), _to_numpy(y)
        return _to_numpy(batch), None

    def memory_estimate(self) -> int:
        """Roughly the bytes a memory cache of this stream's examples would take.

        From the decoded size of its first examples (decoded images are often many times
        larger than their files) and TF's per-example cost; measured once per source.
        """
        if self.example_bytes is None:
            x, y = self.head(MEASURED_EXAMPLES)
            leaves = _leaves(x) + _leaves(y)
            n = len(leaves[0]) if leaves and leaves[0].ndim else 1
            self.example_bytes = EXAMPLE_OVERHEAD + sum(
                TENSOR_OVERHEAD + _payload(leaf) / n for leaf in leaves)
        return int(self.example_bytes * len(self))

    def label_range(self) -> tuple[float, float] | None:
        """Label ids range over the class names, when the source names its classes."""
        if self.class_names:
            return 0.0, float(len(self.class_names) - 1)
        return None


def count(dataset: Any) -> int:
    """Number of elements of a finite dataset: its cardinality, or one pass to count."""
    known = int(dataset.cardinality())
    if known >= 0:
        return known
    if known == int(tf.data.INFINITE_CARDINALITY):
        raise ValueError("the dataset is infinite (does it .repeat()?)")
    return int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
