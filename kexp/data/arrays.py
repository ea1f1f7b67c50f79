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

    def label_range(self) -> tuple[float, float] | None:
        """Smallest and largest label of a single label array (sparse-label checks)."""
        if self.y is None or isinstance(self.y, dict) or not np.size(self.y):
            return None
        y = np.asarray(self.y)
        return float(y.min()), float(y.max())

    def dataset(self) -> Any:
        """The examples as an unbatched ``tf.data.Dataset`` of ``x`` or ``(x, y)``."""
        from kexp.tf import tf

        return tf.data.Dataset.from_tensor_slices(self.x if self.y is None else (self.x, self.y))

    def check(self, path: KeyPath) -> "Arrays":
        """Raise ConfigError at ``path`` when the arrays disagree on the number of examples."""
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
        return self
