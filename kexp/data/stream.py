"""Examples that tf.data reads from their files: image and text folders, TFRecords, TFDS,
a streamed csv, a ``tf.data.Dataset`` from a user function.

A :class:`Stream` never holds the examples in memory; it knows how to build the unbatched
dataset, how many examples there are, and which positions of that (stable) order it keeps.
A fraction split of a stream is a set of positions, drawn from the seed exactly as for
in-memory arrays, so ``kexp evaluate`` can rebuild the same held-out examples from
``splits.npz``. It offers the same small interface as :class:`~kexp.data.arrays.Arrays`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from kexp.data.arrays import nonfinite
from kexp.errors import ConfigError, KeyPath, format_path
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
    #: Where an error reading the examples is reported (``data.train.files``, ...).
    at: KeyPath = ()
    #: ``(example, label)`` of the first label that is not a whole number, when the source
    #: knows it without reading its examples again (a streamed csv's scan); else None.
    first_fraction: tuple[int, float] | None = None
    #: Check every float tensor read for NaN and infinity (sources whose floats are not
    #: checked otherwise: TFRecords, TFDS, a user's dataset): its first examples when read,
    #: then every batch (:func:`guard_batches`).
    finite_guard: bool = False

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
        """The first ``n`` examples as numpy ``(x, y)`` (``y`` is None without labels).

        Reading them is where a broken source shows first (a NaN, a failing op in a user's
        pipeline): a ConfigError at :attr:`at`, not a TensorFlow traceback.
        """
        try:
            batch = next(iter(self.dataset().batch(max(1, min(n, len(self))))))
        except tf.errors.OpError as exc:
            raise reading_error(exc, self.at) from None
        x, y = (_to_numpy(batch[0]), _to_numpy(batch[1])) if self.has_labels else (
            _to_numpy(batch), None)
        if self.finite_guard:
            error = nonfinite(x, y, self.at, (), self.selection)
            if error is not None:
                raise error
        return x, y

    def checked(self) -> "Stream":
        """This stream, once its first examples were read (a ConfigError if they cannot be):
        for sources whose reading can fail after they are opened. They are the examples
        :meth:`memory_estimate` measures, so reading them costs nothing later."""
        self.memory_estimate()
        return self

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

    def label_range(self, output: str | None = None) -> tuple[float, float] | None:
        """Label ids range over the class names, when the source names its classes (the
        classes of a single label: nothing is known of one ``output``'s labels)."""
        if self.class_names and output is None:
            return 0.0, float(len(self.class_names) - 1)
        return None

    def fractional_label(self, output: str | None = None) -> tuple[int, float] | None:
        """As :meth:`kexp.data.arrays.Arrays.fractional_label`, where the source knows it
        (a streamed csv's single label); a pass over a stream to find out would cost an
        epoch."""
        if output is not None:
            return None
        if self.first_fraction is None or self.selection is None:
            return self.first_fraction
        return self.first_fraction if self.first_fraction[0] in set(self.selection) else None


#: The words of :func:`guard_batches`' assertion, by which :func:`nonfinite_error` knows it.
_NONFINITE = "hold NaN or infinity"
_NONFINITE_ERROR = re.compile(r"\[([^\[\]]*) " + _NONFINITE + r"([^\[\]]*)\]")


def _named_leaves(structure: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(name, leaf)`` of a nested structure in ``tf.nest.flatten``'s order (dict keys
    sorted), each named by its keys joined with '/' ('' for a bare tensor)."""
    if isinstance(structure, dict):
        return [leaf for key in sorted(structure)
                for leaf in _named_leaves(structure[key], f"{prefix}/{key}".lstrip("/"))]
    if isinstance(structure, (tuple, list)):
        return [leaf for i, part in enumerate(structure)
                for leaf in _named_leaves(part, f"{prefix}/{i}".lstrip("/"))]
    return [(prefix, structure)]


def guard_batches(batches: Any, at: KeyPath, labelled: bool) -> Any:
    """``batches`` (of a stream's examples) with each float tensor asserted finite.

    A stream cannot be checked whole before training as arrays in memory are: that would be
    one more pass over all its files. Its first examples are checked when it is read
    (:meth:`Stream.head`); the rest as tf.data reads them, batch by batch (per example, the
    check cost about as much as parsing a TFRecord of 32 floats; per batch, nothing
    measurable). A NaN met in training stops it with TensorFlow's ``InvalidArgumentError``
    naming the split and the tensor, instead of NaN weights.
    """
    roles = ("features", "labels") if labelled else ("features",)
    structure = batches.element_spec if labelled else (batches.element_spec,)
    named = [[(name, spec.dtype.is_floating) for name, spec in _named_leaves(part)]
             for part in structure]
    if not any(floating for part in named for _, floating in part):
        return batches

    def check(*element: Any) -> Any:
        whole = element[0] if len(element) == 1 else element  # map unpacks a tuple element
        parts = whole if labelled else (whole,)
        asserts = []
        for role, part, names in zip(roles, parts, named):
            for tensor, (name, floating) in zip(tf.nest.flatten(part), names):
                if floating:
                    what = f"{role} '{name}'" if name else role
                    asserts.append(tf.debugging.Assert(
                        tf.reduce_all(tf.math.is_finite(tensor)),
                        [f"{format_path(at)}: {what} {_NONFINITE} (a batch of the streamed "
                         "examples)"]))
        with tf.control_dependencies(asserts):
            return tf.nest.map_structure(tf.identity, whole)

    return batches.map(check)


def nonfinite_error(exc: BaseException, at: KeyPath) -> ConfigError | None:
    """The ConfigError at ``at`` for a NaN that :func:`guard_batches` found while ``exc`` was
    raised (wherever the dataset was read: its first examples, a preprocessing layer's
    ``adapt``), or None when ``exc`` is about something else."""
    text = getattr(exc, "message", None) or str(exc)
    found = _NONFINITE_ERROR.search(text)
    if not found:
        return None
    what = found.group(1).split(": ", 1)[-1]
    return ConfigError.single(
        tuple(at), f"{what}: NaN or infinity in a batch that tf.data read; a model trained on "
        "it has NaN weights: replace or remove it")


def reading_error(exc: Exception, at: KeyPath) -> ConfigError:
    """A TensorFlow error met reading a stream's first examples, as a ConfigError at ``at``
    (a NaN that :func:`guard_batches` found, or what the source's ops said)."""
    text = getattr(exc, "message", None) or str(exc)
    nonfinite = nonfinite_error(exc, at)
    if nonfinite is not None:
        return nonfinite
    return ConfigError.single(
        tuple(at), f"reading the first examples failed: {type(exc).__name__}: {op_error(text)}")


def op_error(text: str) -> str:
    """The first line of a tf.data error without TensorFlow's wrapping: the function node,
    and the iterator's path (``Error in user-defined function passed to Map transformation
    with iterator: Iterator::Root::...: bad value``)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", lines[0] if lines else "")
    first = re.sub(r"^Error in user-defined function passed to .*? transformation with "
                   r"iterator: \S+: ", "", first)
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", first).strip()


#: Elements counted per step of :func:`count`, and the most it counts before it calls the
#: dataset endless (a ``.repeat().filter(...)`` has no known cardinality and never ends).
COUNT_CHUNK = 1 << 16
COUNT_LIMIT = 100_000_000


def count(dataset: Any, limit: int | None = None) -> int:
    """Number of elements of a finite dataset: its cardinality, or one pass to count.

    The pass goes back to Python every :data:`COUNT_CHUNK` elements, so Ctrl-C stops it (a
    ``reduce`` inside TensorFlow cannot be interrupted), and gives up past ``limit``.
    """
    limit = COUNT_LIMIT if limit is None else limit
    known = int(dataset.cardinality())
    if known >= 0:
        return known
    if known == int(tf.data.INFINITE_CARDINALITY):
        raise ValueError("is infinite (does it .repeat()?)")
    ones = dataset.map(lambda *_: tf.constant(1, tf.int8)).batch(COUNT_CHUNK)
    total = 0
    for chunk in ones:
        total += int(chunk.shape[0])
        if total > limit:
            raise ValueError(f"has more than {limit:,} examples and counting: it looks endless "
                             "(does it .repeat()?); return a finite dataset")
    return total
