"""The ``model.functional`` section: a graph of named tensors (the Keras Functional API).

Everything a straight stack cannot say is written as named tensors and the nodes that make
them: several inputs and outputs, layers shared by several nodes (one layer object, one set
of weights), merges (``Add``, ``Concatenate``, ...) for residual connections, and reusable
*blocks* (small sub-graphs) instantiated many times, each instance with its own weights:

    model:
      functional:
        inputs:
          pixels: {shape: [8, 8, 1]}
          stats: {shape: [4]}
        layers:                               # defined once; every node using one shares it
          encoder: {Dense: {units: 64, activation: relu}}
        blocks:
          residual:                           # y = x + Dense(Dense(x))
            inputs: [x]
            graph:
              - {name: h, layer: {Dense: {units: 64, activation: relu}}, inputs: x}
              - {name: h2, layer: {Dense: {units: 64}}, inputs: h}
              - {name: y, layer: {Add: {}}, inputs: [x, h2]}
            outputs: [y]
        graph:
          - {name: flat, layer: Flatten, inputs: pixels}
          - {name: h1, layer: encoder, inputs: flat}
          - {name: deep, block: residual, repeat: 4, inputs: h1}
          - {name: joined, layer: {Concatenate: {}}, inputs: [deep, stats]}
          - {name: digit, layer: {Dense: {units: 10, activation: softmax}}, inputs: joined}
        outputs: [digit]

This module checks structure only (no TensorFlow). Whether the graph is sound (every name
defined, no cycle, shapes that fit) is checked by :mod:`kexp.model.graph` and while building.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Optional, Union

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from kexp.config.schema.common import Int, KerasSpec, Section, exactly_one_of

if TYPE_CHECKING:  # the model section nests (a sub-model node); resolved in model.py
    from kexp.config.schema.model import ModelSection

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)?$")


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"'{value}' is not a usable name: use letters, digits and underscores, "
            "starting with a letter (it becomes a Keras layer name)"
        )
    return value


def _ref(value: str) -> str:
    if not _REF.match(value):
        raise ValueError(
            f"'{value}' is not a tensor reference: write an input or node name, or "
            "node.part for one output of a node that has several"
        )
    return value


#: A name of an input, node, layer, block or output. (The validators give the messages; the
#: patterns tell editors the same rule through the JSON Schema.)
Name = Annotated[str, AfterValidator(_name), Field(json_schema_extra={"pattern": _NAME.pattern})]
#: A tensor: an input or node name, or ``node.part`` (one output of a multi-output node).
Ref = Annotated[str, AfterValidator(_ref), Field(json_schema_extra={"pattern": _REF.pattern})]

NodeInputs = Union[Ref, list[Ref], dict[Name, Ref]]
Outputs = Union[
    Annotated[list[Ref], Field(min_length=1)], Annotated[dict[Name, Ref], Field(min_length=1)]
]

#: The most repetitions of a block (see ``GraphNode.repeat``).
REPEAT_MAX = 1000

#: The keys of a node that say what it applies; exactly one is given.
NODE_KINDS = ("layer", "block", "model", "application")


class GraphInput(Section):
    """One input of the model: the shape of an example (no batch axis) and its dtype."""

    shape: list[Optional[Annotated[Int, Field(gt=0)]]] = Field(
        description="Shape without the batch axis; null for a variable-length axis."
    )
    dtype: str = Field("float32", description="Input dtype, e.g. float32, int32, string.")


class GraphNode(Section):
    """One node: apply a layer, block, sub-model or keras.applications model to tensors."""

    model_config = ConfigDict(json_schema_extra=exactly_one_of(*NODE_KINDS))

    name: Name = Field(description="The tensor this node makes (and its layer's name).")
    inputs: NodeInputs = Field(
        description="A tensor; a list (merge layers, or a block/sub-model's inputs in order); "
        "or a mapping (a layer's call arguments, a block/sub-model's inputs by name)."
    )
    layer: Optional[KerasSpec] = Field(
        None,
        description="A shared layer's name (from `layers`), a Keras layer class, or "
        "{Class: kwargs} for a new layer of this node alone.",
    )
    block: Optional[Name] = Field(None, description="A block's name (from `blocks`).")
    repeat: Int = Field(
        1, ge=1, le=REPEAT_MAX,
        description="Apply the block this many times in a row, each with its own weights. At "
        "most 1000: every repetition adds a layer to each path through the node, and Keras "
        "walks a model's graph with one nested Python call per layer of a path (Python "
        "allows 1000), so more repetitions cannot be built (docs/functional.md, 'How deep').",
    )
    model: Optional["ModelSection"] = Field(
        None, description="A whole Sequential or Functional sub-model, applied as one node."
    )
    application: Optional[KerasSpec] = Field(
        None,
        description="A keras.applications architecture, e.g. {ResNet50: {include_top: false}}; "
        "weights default to none (random init, no download).",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> "GraphNode":
        given = [k for k in NODE_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            found = f"it has {' and '.join(given)}" if given else "it has none"
            raise ValueError(
                f"node '{self.name}' must apply exactly one of {', '.join(NODE_KINDS)}; {found}"
            )
        return self


class Block(Section):
    """A named sub-graph with its own inputs and outputs, instantiated by ``block:`` nodes.

    Every instance (and every repetition) creates new layers, so it has its own weights;
    ``layers`` of a block are shared between the nodes of one instance. A block may use the
    model's top-level ``layers``, which are then shared by all instances.
    """

    inputs: list[Name] = Field(min_length=1, description="Names of the block's input tensors.")
    layers: dict[Name, KerasSpec] = Field(
        default_factory=dict, description="Layers shared by the nodes of one instance."
    )
    graph: list[GraphNode] = Field(min_length=1, description="The block's nodes.")
    outputs: Outputs = Field(description="The block's output tensors (names or {name: tensor}).")


class FunctionalModel(Section):
    """A ``keras.Model`` built from named inputs, layers, blocks and graph nodes."""

    inputs: dict[Name, GraphInput] = Field(
        min_length=1, description="The model inputs, by name (multi-input data is keyed by it)."
    )
    layers: dict[Name, KerasSpec] = Field(
        default_factory=dict,
        description="Layers defined once by name; each node that names one shares its weights.",
    )
    blocks: dict[Name, Block] = Field(
        default_factory=dict, description="Reusable sub-graphs, by name."
    )
    graph: list[GraphNode] = Field(
        min_length=1, description="The nodes, in any order (sorted by their inputs)."
    )
    outputs: Outputs = Field(
        description="Output tensors: a list of names, or {output name: tensor}. Losses, "
        "metrics and labels of a multi-output model are keyed by these names."
    )
    name: Optional[str] = Field(None, description="Model name; default: the experiment name.")


def output_map(outputs: Outputs) -> dict[str, str]:
    """``{output name: tensor ref}``; a listed ``node.part`` is named ``node_part``.

    >>> output_map(["digit", "r.y"])
    {'digit': 'digit', 'r_y': 'r.y'}
    """
    if isinstance(outputs, dict):
        return dict(outputs)
    return {ref.replace(".", "_"): ref for ref in outputs}
