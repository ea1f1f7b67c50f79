"""The progress state of callbacks, saved with the training state so a resume continues it.

A resumed run must make the same decisions the uninterrupted run would have made:
``EarlyStopping`` must remember how many epochs it has waited and its best weights,
``ReduceLROnPlateau`` its wait and cooldown, a checkpoint callback its best value. Keras'
callbacks keep this in attributes they reset in ``on_train_begin``, and ``BackupAndRestore``
does not save them; this module names, per class, the attributes that are *progress* (never
the settings: ``patience`` may be changed on a resume and must not come back), and reads and
writes them.

A callback of any other class takes part by defining ``get_state() -> dict`` and
``set_state(dict)``; the dict may hold numbers, strings, ``None`` and lists of numpy arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kexp.tf import keras

#: Progress attributes of the Keras callbacks that have any (by class, subclasses included).
PROGRESS: dict[type, tuple[str, ...]] = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_weights", "best_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "cooldown_counter", "best"),
    keras.callbacks.ModelCheckpoint: ("best", "_batches_seen_since_last_saving", "_last_batch_seen"),
}


def _attributes(callback: Any) -> tuple[str, ...] | None:
    for cls in type(callback).__mro__:
        if cls in PROGRESS:
            return PROGRESS[cls]
    names = getattr(callback, "state_attributes", None)  # kexp's own callbacks declare theirs
    return tuple(names) if names else None


def _keys(callbacks: list[Any]) -> list[str]:
    """``<class>#<n>``: the n-th callback of that class. Matching by class and occurrence,
    not by list position, keeps states with their callbacks when a resume adds or removes an
    unrelated one (``output.tensorboard`` may change)."""
    seen: dict[str, int] = {}
    keys = []
    for callback in callbacks:
        name = type(callback).__name__
        keys.append(f"{name}#{seen.get(name, 0)}")
        seen[name] = seen.get(name, 0) + 1
    return keys


def get_states(callbacks: list[Any]) -> dict[str, dict[str, Any]]:
    """The progress state of every callback that has one, keyed by class and occurrence."""
    states: dict[str, dict[str, Any]] = {}
    for key, callback in zip(_keys(callbacks), callbacks):
        if callable(getattr(callback, "get_state", None)) and callable(
            getattr(callback, "set_state", None)
        ):
            states[key] = dict(callback.get_state())
            continue
        names = _attributes(callback)
        if names:
            states[key] = {
                name: _copy(getattr(callback, name)) for name in names if hasattr(callback, name)
            }
    return states


def set_states(callbacks: list[Any], states: dict[str, dict[str, Any]]) -> list[str]:
    """Put saved states back; returns the keys of saved states no callback took."""
    left = dict(states)
    for key, callback in zip(_keys(callbacks), callbacks):
        state = left.pop(key, None)
        if state is None:
            continue
        if callable(getattr(callback, "set_state", None)):
            callback.set_state(state)
        else:
            for name, value in state.items():
                setattr(callback, name, value)
    return sorted(left)


def _copy(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [np.array(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def split_arrays(
    states: dict[str, dict[str, Any]],
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """States as JSON-able scalars plus a flat dict of arrays (for an ``.npz``).

    A list of arrays (``best_weights``) becomes ``{"__arrays__": n}`` in the JSON part and
    ``"<key>/<attr>/<i>"`` entries in the array part.
    """
    scalars: dict[str, dict[str, Any]] = {}
    arrays: dict[str, np.ndarray] = {}
    for key, state in states.items():
        out: dict[str, Any] = {}
        for name, value in state.items():
            if isinstance(value, list) and all(isinstance(v, np.ndarray) for v in value):
                out[name] = {"__arrays__": len(value)}
                for i, array in enumerate(value):
                    arrays[f"{key}/{name}/{i}"] = array
            elif isinstance(value, np.ndarray):
                out[name] = {"__array__": True}
                arrays[f"{key}/{name}"] = value
            else:
                out[name] = _json_scalar(value)
        scalars[key] = out
    return scalars, arrays


def join_arrays(
    scalars: dict[str, dict[str, Any]], arrays: dict[str, np.ndarray]
) -> dict[str, dict[str, Any]]:
    """The inverse of :func:`split_arrays`."""
    states: dict[str, dict[str, Any]] = {}
    for key, state in scalars.items():
        out: dict[str, Any] = {}
        for name, value in state.items():
            if isinstance(value, dict) and "__arrays__" in value:
                out[name] = [np.array(arrays[f"{key}/{name}/{i}"]) for i in range(value["__arrays__"])]
            elif isinstance(value, dict) and value.get("__array__"):
                out[name] = np.array(arrays[f"{key}/{name}"])
            else:
                out[name] = value
        states[key] = out
    return states


def _json_scalar(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    try:
        return float(value)  # a 0-d tensor or array
    except (TypeError, ValueError):
        raise TypeError(
            f"cannot save callback state value of type {type(value).__name__}"
        ) from None
