"""The optimizer state Keras 3's HDF5 loader drops, put back from the ``.h5`` file.

``model.h5`` holds the optimizer's variables (group ``optimizer_weights``: the iteration
count, the learning rate and every slot, e.g. Adam's momentum and velocity per weight). Keras
3's legacy loader (``keras/src/legacy/saving/legacy_h5_format.py``, checked up to 3.15)
builds the optimizer on ``model._trainable_variables`` — the variables a Sequential or
Functional model creates *itself*, which is none — so only the iteration count and learning
rate come back and the slots are silently lost. A model resumed from such a file restarts
Adam's moment estimates from zero.

:func:`restore_optimizer_slots` rebuilds the optimizer on the model's real trainable
variables and assigns every saved value in order, as Keras' ``Optimizer.set_weights`` does. It does nothing when the
loaded optimizer already has all the saved variables, so the day Keras fixes its loader this
becomes a no-op; ``tests/test_h5_optimizer.py`` has a canary that fails then, to say this
module can go.

Example::

    model = keras.models.load_model("model.h5")
    restore_optimizer_slots(model, "model.h5")   # Adam's moments as they were saved
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def saved_optimizer_values(path: str | Path) -> dict[str, np.ndarray]:
    """The optimizer variables stored in an ``.h5`` file, by variable path (in saved order)."""
    import h5py
    from keras.src.legacy.saving.legacy_h5_format import load_attributes_from_hdf5_group

    with h5py.File(path, "r") as f:
        if "optimizer_weights" not in f:
            return {}
        group = f["optimizer_weights"]
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in load_attributes_from_hdf5_group(group, "weight_names")]
        return {name: np.asarray(group[name]) for name in names}


def restore_optimizer_slots(model: Any, path: str | Path) -> int:
    """Give ``model`` (loaded from ``path``) the full optimizer state the file holds.

    Returns how many optimizer variables were restored (0 when there was nothing to do: no
    optimizer, no saved state, or Keras restored it all itself). Raises ``ValueError`` when
    the saved state does not fit the model's optimizer (count or shapes differ), instead of
    training on from a half-restored state.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return 0
    saved = saved_optimizer_values(path)
    if not saved or len(optimizer.variables) >= len(saved):
        return 0
    fresh = optimizer.__class__.from_config(optimizer.get_config())
    with model.distribute_strategy.scope():
        fresh.build(model.trainable_variables)
    # by position, as Keras' own Optimizer.set_weights does: the slots follow the order of
    # the trainable variables, which a save and load keep; their names need not survive
    # (a model built in a fresh process prefixes its variable paths with the model's name)
    variables = list(fresh.variables)
    if len(variables) != len(saved):
        raise ValueError(
            f"the optimizer state in {path} does not fit the model's {type(fresh).__name__}: "
            f"{len(saved)} saved variables, {len(variables)} here"
        )
    for variable, (name, value) in zip(variables, saved.items()):
        if tuple(variable.shape) != value.shape:
            raise ValueError(
                f"the optimizer state in {path} does not fit the model's "
                f"{type(fresh).__name__}: {name} has shape {value.shape}, its variable here "
                f"{variable.path} has {tuple(variable.shape)}"
            )
        variable.assign(value)
    model.optimizer = fresh
    return len(saved)
