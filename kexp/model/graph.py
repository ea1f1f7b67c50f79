"""The structure of a functional graph, checked before any layer is built or data is read.

A graph written by hand goes wrong in a few typical ways: a node names a tensor that does not
exist, nodes feed each other in a circle, a block is used with the wrong number of inputs, a
node computes something no output needs. Each is found here, from the config alone, and
reported at the key path of the node at fault (``model.functional.graph[3].inputs``). Keras
would either fail later with a message about its own internals or, for an unused node,
silently drop it.

The same checks apply to the model's top-level graph and to the body of every block: both
are a :class:`Scope`. Nodes may be listed in any order; :func:`build_order` sorts them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from kexp.config.schema.common import spec_parts
from kexp.config.schema.functional import Block, FunctionalModel, GraphNode, output_map
from kexp.errors import ConfigIssue, KeyPath, format_path, nearest


class NodeFailed(Exception):
    """A node could not be built; its issue is recorded and the nodes after it are skipped."""


@dataclass
class Scope:
    """One graph: a model's top level, or a block's body."""

    path: KeyPath
    inputs: list[str]
    layers: Mapping[str, Any]
    graph: list[GraphNode]
    outputs: dict[str, str]
    #: Key path of each input and output name (a dict key or a list item in the YAML).
    input_paths: dict[str, KeyPath] = field(default_factory=dict)
    output_paths: dict[str, KeyPath] = field(default_factory=dict)
    is_block: bool = False

    def node_path(self, index: int) -> KeyPath:
        return self.path + ("graph", index)

    def describe(self, index: int) -> str:
        """``node 'h1' (model.functional.graph[1])``, for messages about where a tensor came from."""
        return f"node '{self.graph[index].name}' ({format_path(self.node_path(index))})"


def model_scope(spec: FunctionalModel, path: KeyPath) -> Scope:
    outputs = output_map(spec.outputs)
    return Scope(
        path=path,
        inputs=list(spec.inputs),
        layers=spec.layers,
        graph=spec.graph,
        outputs=outputs,
        input_paths={name: path + ("inputs", name) for name in spec.inputs},
        output_paths=_output_paths(spec.outputs, path),
    )


def block_scope(name: str, block: Block, path: KeyPath) -> Scope:
    """The body of block ``name``; ``path`` is the model's (``model.functional``)."""
    here = path + ("blocks", name)
    return Scope(
        path=here,
        inputs=list(block.inputs),
        layers=block.layers,
        graph=block.graph,
        outputs=output_map(block.outputs),
        input_paths={n: here + ("inputs", i) for i, n in enumerate(block.inputs)},
        output_paths=_output_paths(block.outputs, here),
        is_block=True,
    )


def _output_paths(outputs: Any, path: KeyPath) -> dict[str, KeyPath]:
    if isinstance(outputs, dict):
        return {name: path + ("outputs", name) for name in outputs}
    return {ref.replace(".", "_"): path + ("outputs", i) for i, ref in enumerate(outputs)}


def refs(inputs: Any) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """``(key path suffix, tensor ref)`` for each tensor a node's ``inputs`` names."""
    if isinstance(inputs, str):
        yield (), inputs
    elif isinstance(inputs, list):
        for i, ref in enumerate(inputs):
            yield (i,), ref
    else:
        for key, ref in inputs.items():
            yield (key,), ref


def base(ref: str) -> str:
    """The input or node a reference points into: ``r.y`` -> ``r``."""
    return ref.split(".", 1)[0]


def _error(path: KeyPath, message: str, **kwargs: Any) -> ConfigIssue:
    return ConfigIssue(tuple(path), message, **kwargs)


def _warning(path: KeyPath, message: str) -> ConfigIssue:
    return ConfigIssue(tuple(path), message, severity="warning")


def _node_index(scope: Scope) -> dict[str, int]:
    """Node name -> its index (the first one, if a name is given twice)."""
    index: dict[str, int] = {}
    for i, node in enumerate(scope.graph):
        index.setdefault(node.name, i)
    return index


def dependencies(scope: Scope) -> dict[int, list[int]]:
    """For each node, the nodes whose tensors it takes (inputs of the scope left out)."""
    index = _node_index(scope)
    return {
        i: list(dict.fromkeys(index[base(r)] for _, r in refs(node.inputs) if base(r) in index))
        for i, node in enumerate(scope.graph)
    }


def build_order(scope: Scope) -> list[int]:
    """Node indices so that each comes after the nodes it takes from (list order otherwise).

    Assumes :func:`check_scope` found no cycle.
    """
    deps = dependencies(scope)
    done: set[int] = set()
    order: list[int] = []

    def visit(i: int) -> None:
        stack = [(i, iter(deps[i]))]
        while stack:
            node, children = stack[-1]
            child = next((c for c in children if c not in done), None)
            if child is None:
                stack.pop()
                if node not in done:
                    done.add(node)
                    order.append(node)
            else:
                stack.append((child, iter(deps[child])))

    for i in range(len(scope.graph)):
        if i not in done:
            visit(i)
    return order


def _cycles(deps: Mapping[int, Sequence[int]]) -> list[list[int]]:
    """Each cycle once, as the list of node indices around it (first index smallest)."""
    found: dict[frozenset[int], list[int]] = {}
    state: dict[int, int] = {}  # 1: on the current path, 2: finished
    for start in deps:
        if state.get(start):
            continue
        path: list[int] = [start]
        stack = [iter(deps[start])]
        state[start] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                cycle = path[path.index(child):]
                low = cycle.index(min(cycle))
                cycle = cycle[low:] + cycle[:low]
                found.setdefault(frozenset(cycle), cycle)
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append(iter(deps[child]))
    return list(found.values())


def _overlapping(cycles: list[list[int]]) -> list[list[list[int]]]:
    """Cycles that share a node, together: one mistake (a merge inside a loop closes two
    loops through the same nodes) is then reported once, with every loop it makes."""
    groups: list[list[list[int]]] = []
    for cycle in cycles:
        touching = [g for g in groups if any(set(cycle) & set(c) for c in g)]
        merged = [c for g in touching for c in g] + [cycle]
        groups = [g for g in groups if g not in touching] + [merged]
    ordered = [sorted(g, key=lambda c: (c[0], len(c))) for g in groups]
    return sorted(ordered, key=lambda g: g[0][0])


def _shared_layer_name(node: GraphNode, visible: Mapping[str, Any]) -> str | None:
    """The shared layer a node applies (``layer: encoder``), or None for a layer of its own."""
    return node.layer if isinstance(node.layer, str) and node.layer in visible else None


def check_scope(
    scope: Scope, blocks: Mapping[str, Block], outer_layers: Mapping[str, Any]
) -> tuple[list[ConfigIssue], set[str], set[str]]:
    """Issues of one graph, plus the names of the layers and blocks its nodes use."""
    issues: list[ConfigIssue] = []
    index = _node_index(scope)
    visible_layers = {**outer_layers, **scope.layers}
    used_layers: set[str] = set()
    used_blocks: set[str] = set()

    for i, node in enumerate(scope.graph):
        at = scope.node_path(i)
        if node.name in scope.inputs:
            issues.append(_error(at + ("name",), f"node name '{node.name}' is already the name "
                                 "of an input; every tensor needs a name of its own"))
        elif index[node.name] != i:
            issues.append(_error(at + ("name",), f"node name '{node.name}' is used twice "
                                 f"(first at graph[{index[node.name]}])"))
        issues.extend(_check_kind(scope, i, visible_layers, blocks, used_layers, used_blocks))
        issues.extend(_check_refs(scope, i, index, blocks))

    deps = dependencies(scope)
    for group in _overlapping(_cycles(deps)):
        loops = []
        for cycle in group:
            names = [scope.graph[i].name for i in cycle]
            flow = names[:1] + names[1:][::-1]  # the way tensors would flow: each feeds the next
            loops.append(" -> ".join(flow + flow[:1]))
        first = scope.graph[group[0][0]].name
        issues.append(_error(
            scope.node_path(group[0][0]) + ("inputs",),
            f"node '{first}' depends on itself through "
            + (f"a cycle: {loops[0]}" if len(loops) == 1 else f"cycles: {'; '.join(loops)}")
            + " (each feeds the next); every tensor a node takes must be made without it",
        ))

    defined = list(scope.inputs) + list(index)
    for name, ref in scope.outputs.items():
        at = scope.output_paths[name]
        if base(ref) not in defined:
            issues.append(_error(at, f"output '{name}' names the undefined tensor '{ref}'",
                                 suggestion=nearest(base(ref), defined)))
        elif base(ref) in scope.inputs and "." in ref:
            issues.append(_error(at, f"input '{base(ref)}' is one tensor; it has no part "
                                 f"'{ref.split('.', 1)[1]}'"))
    if not any(i.severity == "error" for i in issues):
        issues.extend(_unused(scope))
    return issues, used_layers, used_blocks


def _check_kind(
    scope: Scope, i: int, visible_layers: Mapping[str, Any], blocks: Mapping[str, Block],
    used_layers: set[str], used_blocks: set[str],
) -> list[ConfigIssue]:
    node = scope.graph[i]
    at = scope.node_path(i)
    issues: list[ConfigIssue] = []
    if node.repeat > 1 and node.block is None:
        issues.append(_error(at + ("repeat",), "repeat applies to blocks only "
                             "(`block: NAME, repeat: N`)"))
    if node.layer is not None:
        shared = _shared_layer_name(node, visible_layers)
        if shared is not None:
            used_layers.add(shared)
        elif not isinstance(node.layer, str):
            cls, kwargs = spec_parts(node.layer)
            if "name" in kwargs:
                issues.append(_error(
                    at + ("layer", cls, "name"),
                    f"a node's layer is named after the node ('{node.name}'); remove name: "
                    "(or rename the node)",
                ))
    elif node.block is not None:
        block = blocks.get(node.block)
        if block is None:
            issues.append(_error(
                at + ("block",),
                f"node '{node.name}': no block '{node.block}'"
                + (f" (blocks: {', '.join(blocks)})" if blocks else " (the model defines no blocks)"),
                suggestion=nearest(node.block, blocks),
            ))
        else:
            used_blocks.add(node.block)
            issues.extend(_check_block_use(node, block, at))
    return issues


def _check_block_use(node: GraphNode, block: Block, at: KeyPath) -> list[ConfigIssue]:
    """The node gives the block the inputs it declares; a repeated block chains its outputs."""
    issues = []
    wanted = list(block.inputs)
    given = node.inputs
    problem = None
    if isinstance(given, str) and len(wanted) != 1:
        problem = "gives 1 tensor"
    elif isinstance(given, list) and len(given) != len(wanted):
        problem = f"gives {len(given)} tensors"
    elif isinstance(given, dict) and set(given) != set(wanted):
        missing = [w for w in wanted if w not in given]
        extra = [g for g in given if g not in wanted]
        problem = "gives " + "; ".join(
            ([f"no {', '.join(missing)}"] if missing else [])
            + ([f"unknown {', '.join(extra)}"] if extra else [])
        )
    if problem:
        issues.append(_error(at + ("inputs",), f"node '{node.name}' {problem}, but block "
                             f"'{node.block}' takes {len(wanted)} input(s): {', '.join(wanted)}"))
    outputs = output_map(block.outputs)
    if node.repeat > 1 and len(outputs) != len(wanted):
        issues.append(_error(
            at + ("repeat",),
            f"block '{node.block}' has {len(wanted)} input(s) and {len(outputs)} output(s); "
            "to repeat it, each repetition's outputs must feed the next one's inputs, so "
            "their numbers must be equal",
        ))
    return issues


def _check_refs(
    scope: Scope, i: int, index: Mapping[str, int], blocks: Mapping[str, Block]
) -> list[ConfigIssue]:
    node = scope.graph[i]
    at = scope.node_path(i) + ("inputs",)
    defined = list(scope.inputs) + list(index)
    issues = []
    for suffix, ref in refs(node.inputs):
        name, _, part = ref.partition(".")
        if name not in defined:
            issues.append(_error(
                at + suffix,
                f"node '{node.name}' takes '{ref}', which is not defined: no input or node of "
                f"{'this block' if scope.is_block else 'the model'} has that name",
                suggestion=nearest(name, defined),
            ))
        elif part and name in scope.inputs:
            issues.append(_error(at + suffix, f"input '{name}' is one tensor; it has no part "
                                 f"'{part}'"))
        elif part and name in index:
            source = scope.graph[index[name]]
            block = blocks.get(source.block) if source.block else None
            if block is not None and part not in output_map(block.outputs):
                parts = list(output_map(block.outputs))
                issues.append(_error(
                    at + suffix,
                    f"node '{name}' (block '{source.block}') has no output '{part}' "
                    f"(its outputs: {', '.join(parts)})",
                    suggestion=nearest(part, parts),
                ))
    return issues


def needed(scope: Scope) -> tuple[set[int], set[str]]:
    """The nodes and the inputs that some output depends on."""
    index = _node_index(scope)
    nodes: set[int] = set()
    inputs: set[str] = set()
    todo = [base(ref) for ref in scope.outputs.values()]
    while todo:
        name = todo.pop()
        if name in scope.inputs:
            inputs.add(name)
            continue
        i = index.get(name)
        if i is None or i in nodes:
            continue
        nodes.add(i)
        todo.extend(base(r) for _, r in refs(scope.graph[i].inputs))
    return nodes, inputs


def _unused(scope: Scope) -> list[ConfigIssue]:
    """Warnings for nodes and inputs that no output depends on."""
    needed_nodes, used_inputs = needed(scope)
    where = "the block's outputs" if scope.is_block else "any output"
    issues = []
    for name in scope.inputs:
        if name not in used_inputs:
            consequence = "" if scope.is_block else (
                "; the model still takes it, so the data must still provide it")
            issues.append(_warning(scope.input_paths[name],
                                   f"input '{name}' is not used by {where}{consequence}"))
    for i, node in enumerate(scope.graph):
        if i not in needed_nodes:
            issues.append(_warning(
                scope.node_path(i),
                f"node '{node.name}' does not lead to {where}, so it is left out of the "
                f"{'block' if scope.is_block else 'model'}",
            ))
    return issues


def check_functional(spec: FunctionalModel, path: KeyPath) -> list[ConfigIssue]:
    """Every structural issue (errors and warnings) of a functional model and its blocks."""
    issues, used_layers, used_blocks = check_scope(model_scope(spec, path), spec.blocks, {})
    block_uses: dict[str, set[str]] = {}
    for name, block in spec.blocks.items():
        found, layers, uses = check_scope(block_scope(name, block, path), spec.blocks, spec.layers)
        issues.extend(found)
        used_layers |= layers - set(block.layers)  # a block's own layers hide the model's
        block_uses[name] = uses
        issues.extend(
            _warning(path + ("blocks", name, "layers", key),
                     f"layer '{key}' of block '{name}' is defined but no node of it uses it")
            for key in block.layers if key not in layers
        )
    issues.extend(_recursive_blocks(spec, path, block_uses))
    if not any(i.severity == "error" for i in issues):
        issues.extend(_too_deep(spec, path))

    reachable = _reachable_blocks(used_blocks, block_uses)
    for name in spec.layers:
        if name not in used_layers:
            issues.append(_warning(path + ("layers", name),
                                   f"layer '{name}' is defined but no node uses it"))
    for name in spec.blocks:
        if name not in reachable:
            issues.append(_warning(path + ("blocks", name),
                                   f"block '{name}' is defined but no node uses it"))
    return issues


def _reachable_blocks(used: set[str], uses: Mapping[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(used)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(uses.get(name, ()))
    return seen


def _recursive_blocks(
    spec: FunctionalModel, path: KeyPath, uses: Mapping[str, set[str]]
) -> list[ConfigIssue]:
    """A block that instantiates itself (directly or through others) would never end."""
    names = list(spec.blocks)
    deps = {i: [names.index(u) for u in sorted(uses[n]) if u in spec.blocks] for i, n in enumerate(names)}
    issues = []
    for cycle in _cycles(deps):
        first = names[cycle[0]]
        target = names[cycle[1 % len(cycle)]]
        node = next(i for i, n in enumerate(spec.blocks[first].graph) if n.block == target)
        loop = " -> ".join([names[c] for c in cycle] + [first])
        issues.append(_error(
            path + ("blocks", first, "graph", node, "block"),
            f"block '{first}' instantiates itself ({loop}); a block cannot contain itself",
        ))
    return issues


@dataclass(frozen=True)
class Depth:
    """Layers on the shortest and on the longest path from an input to an output, with
    blocks expanded (``repeat`` times); a sub-model or application node counts as one."""

    shortest: int
    longest: int

    def times(self, n: int) -> "Depth":
        return Depth(self.shortest * n, self.longest * n)


def _node_depth(node: GraphNode, blocks: Mapping[str, Block], path: KeyPath,
                memo: dict[str, Depth]) -> Depth:
    if node.block is None or node.block not in blocks:
        return Depth(1, 1)
    if node.block not in memo:
        memo[node.block] = Depth(1, 1)  # a block inside itself (an error reported elsewhere)
        memo[node.block] = scope_depth(
            block_scope(node.block, blocks[node.block], path), blocks, path, memo)
    return memo[node.block].times(node.repeat)


def scope_depth(scope: Scope, blocks: Mapping[str, Block], path: KeyPath,
                memo: dict[str, Depth] | None = None) -> Depth:
    """The :class:`Depth` of a sound graph (one :func:`check_scope` found no error in).

    One pass in :func:`build_order`, no recursion over nodes: a graph deep enough to matter
    here is exactly one that recursion would fail on.
    """
    memo = {} if memo is None else memo
    index = _node_index(scope)
    shortest: dict[int, int] = {}
    longest: dict[int, int] = {}
    for i in build_order(scope):
        node = scope.graph[i]
        own = _node_depth(node, blocks, path, memo)
        takes = [base(r) for _, r in refs(node.inputs)]
        before = [index[name] for name in takes if name not in scope.inputs and name in index]
        starts = [0] if any(name in scope.inputs for name in takes) or not before else []
        shortest[i] = own.shortest + min(starts + [shortest[j] for j in before])
        longest[i] = own.longest + max([0] + [longest[j] for j in before])
    ends = [base(ref) for ref in scope.outputs.values()]
    made = [index[name] for name in ends if name not in scope.inputs and name in index]
    low = [0] if any(name in scope.inputs for name in ends) or not made else []
    return Depth(min(low + [shortest[i] for i in made]), max([0] + [longest[i] for i in made]))


#: What Keras manages in one chain of layers under Python's default recursion limit (1000),
#: measured with keras 3: a chain of Dense layers built from a shallow call stack: 988.
KERAS_CHAIN = 950


def depth_advice() -> str:
    """Why Keras cannot build a model that deep, and what to write instead."""
    return (
        "Keras builds, saves and loads a model by walking its graph with one nested Python "
        f"call per layer of a path, and Python allows {sys.getrecursionlimit()} nested calls "
        f"(sys.getrecursionlimit()), so about {KERAS_CHAIN} layers in one chain is what Keras "
        "can build. Split a deep stack into sub-models of fewer layers each (`model:` nodes "
        "of a functional model): Keras walks each sub-model's graph on its own"
    )


def _too_deep(spec: FunctionalModel, path: KeyPath) -> list[ConfigIssue]:
    """A model whose every path is longer than Python's recursion limit: Keras would fail
    on it for certain, after building every layer (minutes for ``repeat: 100000``).

    Only the shortest path is certain to be walked whole (Keras walks from the outputs,
    and reaches an input along some path); a model that passes here may still be too deep
    on a longer path, which the builder reports when Keras runs out.
    """
    scope = model_scope(spec, path)
    memo: dict[str, Depth] = {}
    depth = scope_depth(scope, spec.blocks, path, memo)
    if depth.shortest < sys.getrecursionlimit():
        return []
    weights = [_node_depth(node, spec.blocks, path, memo).shortest for node in scope.graph]
    deepest = max(range(len(weights)), key=weights.__getitem__)
    node = scope.graph[deepest]
    at = scope.node_path(deepest)
    if node.block is not None and weights[deepest] > 1:
        each = memo[node.block].shortest
        why = (f"node '{node.name}' repeats block '{node.block}' {node.repeat} times, at least "
               f"{each} layer(s) each" if node.repeat > 1 else
               f"node '{node.name}' applies block '{node.block}' of at least {each} layers")
        at = at + (("repeat",) if node.repeat > 1 else ("block",))
    else:
        why = f"{len(scope.graph)} nodes"
        at = path + ("graph",)
    return [_error(at, f"the model is at least {depth.shortest:,} layers deep on every path "
                   f"from an input to an output ({why}): {depth_advice()}")]


def check_data_keys(
    data: Any, inputs: Sequence[str], outputs: Sequence[str]
) -> list[ConfigIssue]:
    """Features keyed by input name and labels keyed by output name, in every split.

    Only sources that key their data by name (``x:``/``y:`` of npz and npy, ``features:``/
    ``label:`` of csv) are checked here, before any data is read; the others are checked on
    real examples before training.
    """
    issues = []
    for split in ("train", "validation", "test"):
        source = getattr(data, split, None)
        csv = getattr(source, "source", None) == "csv"
        roles = ((("features", inputs, "input", "[columns]"), ("label", outputs, "output", "column"))
                 if csv else (("x", inputs, "input", "key"), ("y", outputs, "output", "key")))
        for role, names, what, item in roles:
            value = getattr(source, role, None)
            at: KeyPath = ("data", split, role)
            shown = ", ".join(names)
            if value is None:
                if csv and role == "features" and len(names) > 1:  # "every other column"
                    issues.append(_error(at, f"the model has {len(names)} inputs ({shown}): "
                                         "give features as a mapping {input name: [columns]}"))
                continue
            if isinstance(value, dict):
                if len(names) == 1:
                    issues.append(_error(at, f"the model has one {what} ('{names[0]}'): give "
                                         f"{role} as a single {'list' if item == '[columns]' else item}, "
                                         "not a mapping"))
                    continue
                for key in value:
                    if key not in names:
                        issues.append(_error(at + (key,), f"the model has no {what} '{key}' "
                                             f"(its {what}s: {shown})", suggestion=nearest(key, names)))
                missing = [n for n in names if n not in value]
                if missing:
                    issues.append(_error(at, f"no {'columns' if csv else 'array'} for the "
                                         f"model's {what}(s) {', '.join(missing)} "
                                         f"(its {what}s: {shown})"))
            elif len(names) > 1:
                issues.append(_error(at, f"the model has {len(names)} {what}s ({shown}): give "
                                     f"{role} as a mapping {{{what} name: {item}}}"))
    return issues
