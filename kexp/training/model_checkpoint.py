"""``ModelCheckpoint`` declared in a config, with atomic saves.

Keras' ``ModelCheckpoint`` calls ``self.model.save(filepath)`` (or ``save_weights``), which
writes the final file in place: a kill while it writes leaves a truncated checkpoint under
the name the user will load. kexp builds the same callback, same arguments and behaviour, but
the model it saves through writes to a temporary file next to the target and renames it
(:func:`kexp.training.artifacts.atomic_path`): a checkpoint file is whole or absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kexp.tf import keras
from kexp.training.artifacts import atomic_path, keep_keras_save_cache, quiet_absl


class _AtomicSaves:
    """The model as a checkpoint callback sees it: every attribute is the model's, except
    that ``save`` and ``save_weights`` go through a temporary file."""

    def __init__(self, model: Any):
        object.__setattr__(self, "_model", model)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._model, name, value)

    def save(self, filepath: Any, overwrite: bool = True, **kwargs: Any) -> None:
        final = Path(filepath)
        with atomic_path(final) as tmp:
            tmp.unlink()  # Keras asks before writing over a file; the name is ours anyway
            with quiet_absl():  # .h5: Keras warns that the format is legacy on every save
                self._model.save(str(tmp), overwrite=True, **kwargs)
        keep_keras_save_cache()  # (every epoch: kexp.training.artifacts)

    def save_weights(self, filepath: Any, overwrite: bool = True, **kwargs: Any) -> None:
        final = Path(filepath)
        suffix = ".weights.h5" if final.name.endswith(".weights.h5") else final.suffix
        with atomic_path(final, suffix=suffix) as tmp:
            tmp.unlink()
            self._model.save_weights(str(tmp), overwrite=True, **kwargs)
        keep_keras_save_cache()


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """``keras.callbacks.ModelCheckpoint`` whose files are written atomically."""

    def set_model(self, model: Any) -> None:
        super().set_model(model if isinstance(model, _AtomicSaves) else _AtomicSaves(model))


def atomic_model_checkpoints(callbacks: list[Any]) -> list[Any]:
    """``callbacks`` with every plain ``ModelCheckpoint`` saving atomically.

    The instance keeps everything Keras made of the config's arguments; only its class
    becomes :class:`AtomicModelCheckpoint`, which adds no state of its own.
    """
    for callback in callbacks:
        if type(callback) is keras.callbacks.ModelCheckpoint:
            callback.__class__ = AtomicModelCheckpoint
    return callbacks
