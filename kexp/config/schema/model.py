"""The ``model`` section: a Sequential stack of Keras layers.

Layers are any class Keras knows (``keras.layers`` or a registered custom layer), written as
``{ClassName: {kwarg: value}}`` exactly as the class's constructor takes them:

    model:
      sequential:
        input: {shape: [8, 8, 1]}
        layers:
          - Conv2D: {filters: 32, kernel_size: 3, activation: relu}
          - Flatten: {}
          - Dense: {units: 10, activation: softmax}

or a graph of named tensors, ``model: {functional: ...}`` (see
:mod:`kexp.config.schema.functional`).
"""

from __future__ import annotations

from typing import Annotated, Optional

from pydantic import ConfigDict, Field, model_validator

from kexp.config.schema.common import Int, KerasSpec, Section, exactly_one_of
from kexp.config.schema.functional import Block, FunctionalModel, GraphNode


class InputSpec(Section):
    """A model input: shape without the batch dimension, and dtype."""

    shape: list[Optional[Annotated[Int, Field(gt=0)]]] = Field(
        description="Shape without the batch axis; null for a variable-length axis."
    )
    dtype: str = Field("float32", description="Input dtype, e.g. float32, int32, string.")
    name: Optional[str] = Field(None, description="Name of the Keras Input tensor.")


class SequentialModel(Section):
    """A straight stack of layers (``keras.Sequential``)."""

    input: InputSpec
    layers: list[KerasSpec] = Field(min_length=1, description="Layers, first to last.")
    name: Optional[str] = Field(None, description="Model name; default: the experiment name.")


class ModelSection(Section):
    """Exactly one kind of model: ``sequential`` or ``functional``."""

    model_config = ConfigDict(json_schema_extra=exactly_one_of("sequential", "functional"))

    sequential: Optional[SequentialModel] = None
    functional: Optional[FunctionalModel] = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "ModelSection":
        given = [k for k in ("sequential", "functional") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of sequential, functional"
                + (" (found both)" if given else "")
            )
        return self


# A graph node may hold a whole sub-model: resolve that forward reference now.
GraphNode.model_rebuild(_types_namespace={"ModelSection": ModelSection})
Block.model_rebuild()
FunctionalModel.model_rebuild()
ModelSection.model_rebuild()
