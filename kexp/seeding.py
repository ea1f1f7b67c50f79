"""Seeds and determinism: one seed for Python, numpy and TensorFlow.

A config without a seed gets one drawn here; it is written into the run's saved config so
that every run can be rerun exactly.

Op determinism is a process-wide TensorFlow switch, so it is set either way for every run:
on for ``deterministic: true``, off again for ``deterministic: false`` (a notebook or a test
that trained a deterministic run first would otherwise train the next one deterministically
too, slower and not as configured). The run records the setting it trained with
(``environment.numerics.op_determinism`` in the manifest, :func:`kexp.environment.numerics`).
"""

from __future__ import annotations

import secrets


def draw_seed() -> int:
    """A fresh seed in the range every RNG accepts."""
    return secrets.randbelow(2**31 - 1)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, numpy and TF; make TF ops deterministic or not, as ``deterministic`` says."""
    from kexp.tf import keras, tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        disable_op_determinism()


def disable_op_determinism() -> None:
    """Turn TF's op determinism off. TF 2.21 exports only the switch that turns it on
    (``tf.config.experimental.enable_op_determinism``); the one that turns it off lives next
    to it in ``tensorflow.python.framework.config``."""
    from kexp.tf import tf

    public = getattr(tf.config.experimental, "disable_op_determinism", None)
    if public is not None:
        public()
        return
    from tensorflow.python.framework.config import disable_op_determinism as private

    private()
