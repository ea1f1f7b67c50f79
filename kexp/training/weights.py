"""A fingerprint of a model's weights: equal hashes mean bit-identical weights.

``kexp reproduce`` compares the final weights of two runs; the sha256 is recorded in every
completed run's manifest (``weights_sha256``). Each weight contributes its dtype, its shape
and its raw bytes, in ``model.weights`` order; names are left out, since Keras numbers them
per process (``dense_3`` in one process is ``dense`` in another) and they say nothing about
the values.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np


def weights_sha256(model: Any) -> str:
    """sha256 of every weight of ``model`` (dtype, shape, bytes), in order."""
    digest = hashlib.sha256()
    for value in model.get_weights():
        array = np.ascontiguousarray(value)
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def file_weights_sha256(path: Path) -> str:
    """:func:`weights_sha256` of a saved model file (``.keras`` or ``.h5``)."""
    from kexp.runs import load_model

    return weights_sha256(load_model(Path(path)))
