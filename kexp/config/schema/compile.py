"""The ``compile`` section: what ``model.compile`` gets.

Names are resolved through Keras' own ``keras.optimizers.get``, ``keras.losses.get`` and
``keras.metrics.get``, so every built-in (and every registered custom object) works:

    compile:
      optimizer: {AdamW: {learning_rate: 0.001, weight_decay: 0.0001}}
      loss: sparse_categorical_crossentropy
      metrics: [accuracy]
"""

from __future__ import annotations

from typing import Optional, Union

from pydantic import Field

from kexp.config.schema.common import Float, KerasSpec, Section


class CompileSection(Section):
    """Optimizer, loss(es) and metrics; one loss/metric list per output for multi-output models."""

    optimizer: KerasSpec = Field("adam", description="Optimizer name or {Name: kwargs}.")
    loss: Union[KerasSpec, dict[str, KerasSpec]] = Field(
        description="Loss name or {Name: kwargs}; or {output name: loss} per output."
    )
    loss_weights: Optional[Union[list[Float], dict[str, Float]]] = Field(
        None, description="Weight of each output's loss."
    )
    metrics: Union[list[KerasSpec], dict[str, list[KerasSpec]]] = Field(
        default_factory=list, description="Metric names or {Name: kwargs}; or per output."
    )
