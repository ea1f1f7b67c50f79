"""Seeds and determinism: one seed for Python, numpy and TensorFlow.

A config without a seed gets one drawn here; it is written into the run's saved config so
that every run can be rerun exactly.
"""

from __future__ import annotations

import secrets


def draw_seed() -> int:
    """A fresh seed in the range every RNG accepts."""
    return secrets.randbelow(2**31 - 1)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, numpy and TF; with ``deterministic``, make TF ops deterministic too."""
    from kexp.tf import keras, tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
