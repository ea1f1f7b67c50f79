"""``fit`` in a form that a resumed run continues bit for bit.

Three things make a resumed run differ from an uninterrupted one, besides the variables that
:class:`~kexp.training.state.TrainingState` restores:

* **The order of the training examples.** ``Dataset.shuffle`` reshuffles from a generator
  shared by every iterator of a dataset, and Keras makes one or two iterators per ``fit`` (one
  of them reading ahead under a distribution strategy): the order of an epoch depends on
  everything before it. Here ``fit`` reads an endless stream of passes over the training split
  in which pass ``p`` is shuffled from ``(seed, p)`` alone (``make_dataset(passes_from=...)``,
  :mod:`kexp.data.pipeline`); a resume starts the stream at the pass it stopped in and skips
  the batches of that pass already trained on. ``steps_per_epoch`` is always given to ``fit``
  (the whole split by default), so epochs and passes may differ.
* **A stop in the middle of an epoch.** ``fit`` can only start at an epoch boundary. The rest
  of the interrupted epoch is run as a ``fit`` of that one epoch with ``steps_per_epoch`` set
  to the remaining steps (the callbacks and learning-rate schedules still see the whole
  epoch's steps), then training continues with a second ``fit``. A
  :class:`ContinuedCallbackList` makes the two look like one to every callback: no
  ``on_train_end``/``on_train_begin`` between them, and step numbers offset so the
  interrupted epoch counts on from where it stopped; the metric accumulators of the epoch's
  first part come from the saved state.
* **Training stages** (:mod:`kexp.training.stages`): each stage's ``fit`` gets its own stream
  too, and a stage is entered (unfreeze, recompile) exactly once per process. The callbacks
  see one training across stages as well (the same ``ContinuedCallbackList``): a TensorBoard
  keeps its writers open, a CSVLogger its file, EarlyStopping its wait and best.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from kexp.tf import keras
from kexp.training.state import Position, TrainingState


class ContinuedCallbackList(keras.callbacks.CallbackList):
    """A ``CallbackList`` that can hold back ``on_train_end`` and skip the next
    ``on_train_begin``, and offsets step numbers: several ``fit`` calls, one training."""

    def __init__(self, callbacks: Sequence[Any], model: Any, **params: Any):
        super().__init__(list(callbacks), add_history=True, add_progbar=False, model=model,
                         **params)
        self.offset = 0
        self.hold_end = False
        self.skip_begin = False
        self.held_logs: Mapping[str, Any] | None = None
        self.held = False

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.skip_begin:  # the training goes on: the end held back never happened
            self.skip_begin = False
            self.held, self.held_logs = False, None
            return
        super().on_train_begin(logs)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.hold_end:
            self.held_logs, self.held = logs, True
            return
        super().on_train_end(logs)

    def release_end(self) -> None:
        """Deliver a held-back ``on_train_end``."""
        if self.held:
            self.held = False
            super().on_train_end(self.held_logs)

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        super().on_train_batch_begin(batch + self.offset, logs)

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        super().on_train_batch_end(batch + self.offset, logs)


@dataclass(frozen=True)
class Segment:
    """One ``fit`` call: epochs ``[first, end)``, starting ``step`` steps into ``first``."""

    first: int
    end: int
    step: int
    stage: int


def plan(start: Position, epochs: int, stage_starts: Sequence[int] = ()) -> list[Segment]:
    """The ``fit`` calls that take training from ``start`` to ``epochs``.

    ``stage_starts`` are the epochs where a new training stage begins (e.g. ``freeze.epochs``).
    A mid-epoch start gets a one-epoch segment of its own; stages never share a segment. At
    least one segment is returned, possibly empty (``first == end``): restoring the state and
    the callbacks' ``on_train_end`` still have to happen.
    """
    bounds = sorted({b for b in stage_starts if 0 < b < epochs})

    def stage_of(epoch: int) -> int:
        return sum(1 for b in bounds if epoch >= b)

    segments: list[Segment] = []
    epoch = min(start.epochs, epochs)
    if start.step and epoch < epochs:
        segments.append(Segment(epoch, epoch + 1, start.step, stage_of(epoch)))
        epoch += 1
    while epoch < epochs:
        stage = stage_of(epoch)
        end = next((b for b in bounds if b > epoch), epochs)
        segments.append(Segment(epoch, end, 0, stage))
        epoch = end
    if not segments:
        segments.append(Segment(epoch, epoch, 0, stage_of(max(epoch - 1, 0))))
    return segments


#: ``enter_stage(model, dataset, **fit_kwargs)``: a ``fit`` that first enters the stage its
#: ``initial_epoch`` is in (unfreezing and recompiling for a fine-tuning stage).
FitFunction = Callable[..., Any]


def fit_resumable(
    model: Any,
    train_data: Callable[[int], Any],
    *,
    epochs: int,
    steps_per_epoch: int,
    batches_per_pass: int,
    callbacks: Sequence[Any],
    state: TrainingState,
    after_state: Sequence[Any] = (),
    start: Position = Position(),
    stage_starts: Sequence[int] = (),
    enter_stage: FitFunction | None = None,
    build_metrics: Callable[[], None] | None = None,
    **fit_kwargs: Any,
) -> Any:
    """Train from ``start`` to ``epochs``; returns the History of this process's epochs.

    ``train_data(p)`` must build a new dataset each call: the endless stream of training
    batches from pass ``p`` on (``batches_per_pass`` batches per pass). ``enter_stage`` is the ``fit`` that enters a stage
    (``kexp.training.stages.fit``); continuing inside a stage uses ``model.fit``.
    ``build_metrics`` is called by the state before a mid-epoch restore, so the metric
    variables the saved accumulators go into exist (Keras builds them lazily, at the first
    step).
    """
    segments = plan(start, epochs, stage_starts)
    callbacks = [c for c in callbacks if c is not state] + [state, *after_state]
    state.steps_per_epoch = steps_per_epoch
    state.callbacks = callbacks
    state.build_metrics = build_metrics
    state.stage_starts = set(stage_starts)
    cbl = ContinuedCallbackList(callbacks, model, epochs=epochs, steps=steps_per_epoch,
                                verbose=0)
    entered: set[int] = set()
    history = None
    stopped_stage: int | None = None
    for index, segment in enumerate(segments):
        if stopped_stage is not None and segment.stage == stopped_stage:
            continue  # a callback stopped this stage (EarlyStopping): on to the next stage
        cbl.offset = segment.step
        # All the fits are one training for the callbacks: the rest of a partial epoch and
        # the next stage too. Keras' callbacks reset in on_train_begin (EarlyStopping's wait
        # and best, a CSVLogger's file, TensorBoard's step counts) and close in on_train_end
        # (TensorBoard's writers, which set_model alone would reopen), so each gets one of each.
        cbl.hold_end = index + 1 < len(segments)
        first_pass, skip = divmod(segment.first * steps_per_epoch + segment.step,
                                  batches_per_pass)
        dataset = train_data(first_pass).skip(skip)
        # The rest of an interrupted epoch is a one-epoch fit of exactly the remaining steps.
        # Not of the full epoch on data that ends early: the step that finds the data
        # exhausted still increments the optimizer's iteration count (its increment does not
        # wait for the batch inside the traced step), which shifts Adam's bias correction and
        # every schedule from then on.
        arguments = {**fit_kwargs, "initial_epoch": segment.first, "epochs": segment.end,
                     "steps_per_epoch": steps_per_epoch - segment.step, "callbacks": cbl}
        if segment.stage in entered or enter_stage is None:
            history = model.fit(dataset, **arguments)
        else:  # (a stage's recompile converts schedules with the whole epoch's steps)
            history = enter_stage(model, dataset, epoch_steps=steps_per_epoch, **arguments)
        entered.add(segment.stage)
        cbl.offset = 0
        if model.stop_training:
            stopped_stage = segment.stage
        if cbl.hold_end:
            cbl.hold_end = False
            cbl.skip_begin = True
    cbl.skip_begin = False
    cbl.release_end()
    return history
