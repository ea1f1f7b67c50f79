"""``hardware.steps_per_execution`` that keeps an epoch the length the data gives it.

Keras runs ``steps_per_execution`` training steps per call into the traced function, and an
epoch as whole calls: with a given ``steps_per_epoch`` its ``EpochIterator`` steps through
``range(0, steps_per_epoch, steps_per_execution)`` and the last call runs a full execution
(``keras/src/trainers/epoch_iterator.py``). A finite dataset ends that call early, but kexp
trains on an endless, seeded stream of passes (``kexp.training.loop``) so that a resumed run
continues bit for bit; there nothing ends it, and an epoch of 39 steps at 4 per execution
trains 40 and eats a batch of the next epoch (measured: 80 optimizer steps for 2 epochs of
39 batches).

So kexp runs the largest number of steps per execution that divides the epoch, never more
than asked, and says so when it is fewer: 39 steps at 4 per execution run at 3. A stop in the
middle of an epoch then falls on a multiple of it too (Keras reports a batch end per
execution), so the rest of an interrupted epoch divides as well.

Example::

    >>> steps_per_execution(4, 39)
    3
    >>> steps_per_execution(32, 64)
    32
"""

from __future__ import annotations

import warnings
from typing import Any

from kexp.errors import ConfigIssue, ConfigWarning


def steps_per_execution(requested: int, steps_per_epoch: int) -> int:
    """The largest divisor of ``steps_per_epoch`` that is at most ``requested``."""
    for count in range(min(requested, steps_per_epoch), 1, -1):
        if steps_per_epoch % count == 0:
            return count
    return 1


def fit_execution(model: Any, info: Any, requested: int, steps_per_epoch: int) -> int:
    """Set ``model.steps_per_execution`` for epochs of ``steps_per_epoch`` steps; returns it.

    Warns at ``hardware.steps_per_execution`` and notes it in ``info.facts`` (the run's
    :class:`~kexp.hardware.strategy.StrategyInfo`) when it runs fewer than asked.
    """
    count = steps_per_execution(requested, steps_per_epoch)
    if count != int(getattr(model, "steps_per_execution", 1)):
        model.steps_per_execution = count
        model.train_function = None  # traced with the old count, if it was traced at all
    if count != requested:
        note = (f"steps_per_execution {requested} does not divide the {steps_per_epoch} "
                f"steps of an epoch: running {count} per execution")
        warnings.warn(ConfigWarning(ConfigIssue(
            ("hardware", "steps_per_execution"),
            f"{note} (Keras would run whole executions, {-(-steps_per_epoch // requested) * requested} "
            f"steps an epoch, and train on batches of the next epoch). Choose a divisor of "
            f"{steps_per_epoch}, or set train.steps_per_epoch to a multiple of {requested}",
            severity="warning",
        )), stacklevel=2)
        info.facts.setdefault("notes", []).append(note)
    return count
