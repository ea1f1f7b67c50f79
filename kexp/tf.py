"""The one place kexp imports TensorFlow and Keras.

Importing TensorFlow costs seconds, so only modules that really need it import this one, and
the CLI imports those lazily inside commands: ``kexp --help`` and schema checks stay fast.
TensorFlow's C++ start-up chatter (failed CUDA probing on a CPU machine, CPU feature notes)
is silenced unless the user has set ``TF_CPP_MIN_LOG_LEVEL`` themselves.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise RuntimeError(
        f"kexp runs Keras on TensorFlow, but KERAS_BACKEND is '{keras.backend.backend()}'"
    )

__all__ = ["keras", "tf"]
