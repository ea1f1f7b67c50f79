"""Instances of reusable blocks: a sub-graph applied in place, with layers of its own.

A ``block:`` node expands the block's graph into the model (no nested ``keras.Model``), so
every layer of every instance is an ordinary layer of the model: it shows in the summary,
saves to ``.keras`` and ``.h5`` like any other, and has its own weights. Names are made from
the node: block ``residual`` used by node ``deep`` with ``repeat: 3`` makes layers
``deep_1_h``, ``deep_2_h``, ``deep_3_h``; without repeat, ``deep_h``.

``repeat: N`` chains N instances: the outputs of one are the inputs of the next, in order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from kexp.config.schema.functional import GraphNode
from kexp.errors import KeyPath, format_path
from kexp.model.graph import NodeFailed, block_scope, refs

if TYPE_CHECKING:
    from kexp.model.functional import GraphBuilder


def _by_input(names: list[str], args: Any) -> dict[str, Any]:
    """The node's tensors keyed by the block's input names (checked by the graph checks)."""
    if isinstance(args, dict):
        return {name: args[name] for name in names}
    if isinstance(args, list):
        return dict(zip(names, args))
    return {names[0]: args}


def apply_block(
    builder: "GraphBuilder", node: GraphNode, args: Any, origins: Mapping[str, str],
    at: KeyPath, prefix: str, note: str,
) -> Any:
    """Apply ``node.repeat`` instances of ``node.block`` to ``args``; its output tensor(s).

    One output gives a tensor; several give ``{output name: tensor}`` (``node.part``).
    """
    block = builder.spec.blocks[node.block]
    scope = block_scope(node.block, block, builder.path)
    tensors = _by_input(list(block.inputs), args)
    given = [origins.get(ref.split(".", 1)[0], ref) for _, ref in refs(node.inputs)]
    if isinstance(node.inputs, dict):
        given = [origins.get(node.inputs[n].split(".", 1)[0], node.inputs[n]) for n in block.inputs]
    here: dict[str, str] = {
        name: f"block input '{name}' (given {source})" for name, source in zip(block.inputs, given)
    }
    outputs: dict[str, Any] = {}
    for rep in range(1, node.repeat + 1):
        numbered = node.repeat > 1
        inner_prefix = f"{prefix}{node.name}_" + (f"{rep}_" if numbered else "")
        inner_note = (
            f"{note} in block '{node.block}' (instance '{node.name}'"
            + (f", repetition {rep} of {node.repeat}" if numbered else "")
            + f", {format_path(at)})"
        )
        local = builder.make_layers(block.layers, inner_prefix, scope.path + ("layers",))
        if None in local.values():
            raise NodeFailed(node.name)  # a bad block layer: reported once per block
        env = builder.run(scope, dict(tensors), dict(here), inner_prefix, local, inner_note)
        outputs = {
            name: builder.resolve(ref, env, scope.output_paths[name])
            for name, ref in scope.outputs.items()
        }
        tensors = dict(zip(block.inputs, outputs.values()))
        here = {
            name: f"output '{out}' of repetition {rep} of node '{node.name}' ({format_path(at)})"
            for name, out in zip(block.inputs, outputs)
        }
    if len(outputs) == 1:
        return next(iter(outputs.values()))
    return outputs
