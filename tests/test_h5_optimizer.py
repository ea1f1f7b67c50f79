"""model.h5 keeps the whole optimizer state, and kexp gets all of it back.

Keras 3's HDF5 loader restores only the iteration count and the learning rate of the
optimizer; kexp.h5_optimizer puts the slots (Adam's moments) back from the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kexp.tf import keras


def _trained(tmp_path: Path) -> tuple[keras.Model, Path, tuple[np.ndarray, np.ndarray]]:
    keras.utils.set_random_seed(1)
    x = np.random.default_rng(0).random((64, 4)).astype("float32")
    y = np.random.default_rng(1).random((64, 2)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(0.01), keras.losses.MeanSquaredError())
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    path = tmp_path / "model.h5"
    model.save(path)
    return model, path, (x, y)


def test_canary_keras_h5_loader_still_drops_the_optimizer_slots(tmp_path: Path) -> None:
    """Fails the day Keras restores the slots itself: then kexp/h5_optimizer.py can go."""
    from kexp.h5_optimizer import saved_optimizer_values

    original, path, _ = _trained(tmp_path)
    saved = saved_optimizer_values(path)
    assert len(saved) == len(original.optimizer.variables) == 10  # 2 + 2 slots x 4 weights
    loaded = keras.models.load_model(path)
    assert int(loaded.optimizer.iterations) == 8
    assert len(loaded.optimizer.variables) < len(saved), (
        "Keras' .h5 loader now restores the optimizer slots: kexp.h5_optimizer is no longer "
        "needed (it already does nothing in that case); remove it and this test"
    )


def test_kexp_load_model_restores_every_optimizer_variable(tmp_path: Path) -> None:
    import kexp

    original, path, (x, y) = _trained(tmp_path)
    loaded = kexp.load_model(path)
    assert len(loaded.optimizer.variables) == len(original.optimizer.variables)
    for a, b in zip(original.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # and training goes on exactly as it would have from the original model
    original.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(original.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)


def test_a_restore_with_nothing_missing_does_nothing(tmp_path: Path) -> None:
    from kexp.h5_optimizer import restore_optimizer_slots

    original, path, _ = _trained(tmp_path)
    assert restore_optimizer_slots(original, path) == 0  # it already has every variable
    loaded = keras.models.load_model(path)
    assert restore_optimizer_slots(loaded, path) == 10
    assert restore_optimizer_slots(loaded, path) == 0


def test_a_state_that_does_not_fit_the_model_is_refused(tmp_path: Path) -> None:
    from kexp.h5_optimizer import restore_optimizer_slots

    _, path, _ = _trained(tmp_path)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5), keras.layers.Dense(2)])
    other.compile(keras.optimizers.Adam(0.01), keras.losses.MeanSquaredError())
    with pytest.raises(ValueError, match="does not fit"):
        restore_optimizer_slots(other, path)
