"""In-memory (or memory-mapped) examples: features and labels as numpy arrays.

Sources read files into :class:`Arrays`; splits slice them; the pipeline turns them into a
``tf.data.Dataset``. A multi-input or multi-output model has dicts keyed by input/output name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

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

    def __len__(self) -> int:
        return _length(self.x)

    def take(self, index: np.ndarray) -> "Arrays":
        """The examples at ``index`` (a copy, so a memory map is not held open by a split)."""
        return Arrays(_take(self.x, index), None if self.y is None else _take(self.y, index),
                      list(self.files))

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
