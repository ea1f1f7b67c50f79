"""Workaround for keras-team/keras#20585: ``Model.fit`` under ``MultiWorkerMirroredStrategy``.

Keras 3 (checked up to 3.15 with TensorFlow 2.21) breaks multi-worker training in two places
of ``keras/src/backend/tensorflow/trainer.py``; single-machine ``MirroredStrategy`` works:

1. ``TensorFlowTrainer._maybe_symbolic_build`` takes the first distributed batch and
   ``strategy.reduce("MEAN", batch)``-s it only to learn its shapes and dtypes. Under
   ``MultiWorkerMirroredStrategy`` that reduce is a cross-worker collective on the input
   data, and it fails (``Attempt to convert a value (PerReplica...) to a Tensor``).
   Fix: take this worker's first local replica batch instead. ``_symbolic_build`` only reads
   ``.shape`` and ``.dtype``, and every replica's batch has the same structure.
2. ``reduce_per_replica`` reduces the per-step logs (loss and metric results, scalars) with
   ``strategy.reduce("MEAN", v, axis=0)`` in multi-worker mode; ``axis=0`` on a scalar fails
   at trace time (``Invalid reduction dimension 0 for input with 0 dimensions``).
   Fix: ``axis=None``, the mean across all replicas of all workers, which is what the
   single-machine ``MirroredStrategy`` path computes locally. All workers then see the same
   logs, so callbacks (EarlyStopping, ReduceLROnPlateau) decide the same on every worker and
   the workers stay in step.

Both patches delegate to the original Keras code for every other strategy, so nothing
changes outside multi-worker training. Each half has its own version guard
(:data:`AFFECTED`, :data:`FIXED_IN`) because upstream may fix one without the other; a half
is installed only for the Keras versions it is needed in. ``tests/test_multiworker.py`` runs
real workers with each half left out in turn and fails, naming the half, the day upstream
fixes one: set that half's ``FIXED_IN`` (and delete this module once both are set).
"""

from __future__ import annotations

from typing import Any

#: The two halves, by the name :func:`install` takes.
HALVES = ("symbolic_build", "reduce")

#: First Keras version (major, minor) with each half of the bug; newer ones get the patch too
#: until the canary test reports an upstream fix.
AFFECTED: dict[str, tuple[int, int]] = {"symbolic_build": (3, 0), "reduce": (3, 0)}

#: First Keras version in which upstream fixed each half (None: not fixed yet). The canary
#: in tests/test_multiworker.py says which half to set, and to which version.
FIXED_IN: dict[str, tuple[int, int] | None] = {"symbolic_build": None, "reduce": None}

_installed: dict[str, Any] = {}


def _version(text: str) -> tuple[int, int]:
    parts = (text.split(".") + ["0", "0"])[:2]
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


def needed(keras_version: str, half: str | None = None) -> bool:
    """Whether ``keras_version`` has ``half`` of the bug (any half when None): from its
    :data:`AFFECTED` version up to, not including, its :data:`FIXED_IN` version."""
    version = _version(keras_version)
    if half is None:
        return any(needed(keras_version, h) for h in HALVES)
    fixed = FIXED_IN[half]
    return version >= AFFECTED[half] and (fixed is None or version < fixed)


def _multi_worker(strategy: Any) -> bool:
    from keras.src.backend.tensorflow import trainer

    return bool(trainer._collective_all_reduce_multi_worker(strategy))


def _local_batch(strategy: Any, batch: Any) -> Any:
    from keras.src import tree

    from kexp.tf import tf

    def first_local(value: Any) -> Any:
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return tree.map_structure(first_local, batch)


def symbolic_build(original: Any) -> Any:
    """``_maybe_symbolic_build`` that reads shapes from a local replica under multi-worker."""

    def _maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> Any:
        strategy = self._distribute_strategy
        if strategy is None or not _multi_worker(strategy):
            return original(self, iterator=iterator, data_batch=data_batch)
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = _local_batch(strategy, next(batches))
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    _maybe_symbolic_build.__wrapped__ = original  # type: ignore[attr-defined]
    return _maybe_symbolic_build


def reduce_per_replica(original: Any) -> Any:
    """``reduce_per_replica`` whose multi-worker mean does not reduce along axis 0."""

    def patched(values: Any, strategy: Any, reduction: Any) -> Any:
        if reduction in ("auto", "mean") and _multi_worker(strategy):
            from keras.src import tree

            from kexp.tf import tf

            mean = tf.distribute.ReduceOp.MEAN
            return tree.map_structure(lambda v: strategy.reduce(mean, v, axis=None), values)
        return original(values, strategy, reduction)

    patched.__wrapped__ = original  # type: ignore[attr-defined]
    return patched


def install(parts: tuple[str, ...] = HALVES) -> bool:
    """Patch the installed Keras with the halves in ``parts`` that its version needs
    (idempotent). Returns whether a patch is in place.

    ``parts`` selects the halves (the canary test leaves each out in turn).
    """
    import keras
    from keras.src.backend.tensorflow import trainer

    wanted = [half for half in HALVES if half in parts and needed(keras.__version__, half)]
    hooks = ("reduce_per_replica", "_collective_all_reduce_multi_worker", "TensorFlowTrainer")
    if wanted and not all(hasattr(trainer, name) for name in hooks):
        return False  # Keras moved this code: the canary test says whether the bug remains
    if "symbolic_build" in wanted and "symbolic_build" not in _installed:
        original = trainer.TensorFlowTrainer._maybe_symbolic_build
        _installed["symbolic_build"] = original
        trainer.TensorFlowTrainer._maybe_symbolic_build = symbolic_build(original)
    if "reduce" in wanted and "reduce" not in _installed:
        original = trainer.reduce_per_replica
        _installed["reduce"] = original
        trainer.reduce_per_replica = reduce_per_replica(original)
    return bool(_installed)


def uninstall() -> None:
    """Put the original Keras functions back."""
    from keras.src.backend.tensorflow import trainer

    if "symbolic_build" in _installed:
        trainer.TensorFlowTrainer._maybe_symbolic_build = _installed.pop("symbolic_build")
    if "reduce" in _installed:
        trainer.reduce_per_replica = _installed.pop("reduce")


def installed() -> tuple[str, ...]:
    """The halves currently patched (recorded in the manifest)."""
    return tuple(sorted(_installed))
