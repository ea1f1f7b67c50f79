"""Build a ``keras.Model`` from the ``model.functional`` section.

The graph is first checked as a whole (:mod:`kexp.model.graph`: undefined tensors, cycles,
unused nodes), then every layer is constructed (all bad names and arguments reported
together), then the nodes are applied in dependency order. A node whose inputs do not fit its
layer is reported in the user's terms: the node, each input tensor's shape and the node that
made it, then what Keras objected to. Branches that do not depend on a failed node are still
built, so independent mistakes show up in one run.

Layers are named after their nodes (a shared layer after its key under ``layers:``), and each
output is a layer named after the output, so the names a user monitors in callbacks
(``val_digit_accuracy``) are the names written in the config.
"""

from __future__ import annotations

import inspect
import re
import warnings
from typing import Any, Mapping

from kexp.config.schema.common import spec_parts
from kexp.config.schema.functional import FunctionalModel, GraphNode, output_map
from kexp.errors import ConfigError, ConfigIssue, ConfigWarning, KeyPath, format_path, nearest
from kexp.model.applications import make_application
from kexp.model.blocks import apply_block
from kexp.model.graph import (
    NodeFailed,
    Scope,
    build_order,
    check_functional,
    model_scope,
    needed,
    refs,
)
from kexp.resolve import known_names, make_layer
from kexp.tf import keras


def build_functional(spec: FunctionalModel, name: str, path: KeyPath, prefix: str = "") -> Any:
    """The functional model ``spec`` declares; ConfigError with every problem found.

    ``prefix`` starts the name of every layer made (a sub-model node's: ``<node>_``), so
    that the weights of two sub-models with the same inner names still have distinct names.
    """
    issues = check_functional(spec, path)
    errors = [i for i in issues if i.severity == "error"] + layer_issues(spec, path)
    if errors:
        raise ConfigError(errors)
    for issue in issues:
        warnings.warn(ConfigWarning(issue), stacklevel=2)
    return GraphBuilder(spec, path, prefix).build(spec.name or _model_name(name))


def layer_issues(spec: FunctionalModel, path: KeyPath) -> list[ConfigIssue]:
    """Every bad layer name or argument, in the model and in each block, checked once.

    Constructing a layer is cheap (no weights until it is applied), so this runs even when
    the graph has structural problems: one run of ``kexp validate`` shows both kinds.
    """
    probe = GraphBuilder(spec, path)
    probe.shared = probe.make_layers(spec.layers, "", path + ("layers",), claim=False)
    graphs = [(path, spec.graph, {})] + [
        (path + ("blocks", name), block.graph, block.layers) for name, block in spec.blocks.items()
    ]
    for here, graph, local in graphs:
        local_layers = probe.make_layers(local, "", here + ("layers",), claim=False)
        for i, node in enumerate(graph):
            if node.layer is not None:
                try:
                    probe.node_layer(node, here + ("graph", i), "",
                                     {**probe.shared, **local_layers}, claim=False)
                except NodeFailed:
                    pass
    return probe.issues


class GraphBuilder:
    """The state of one model's build: Keras layer names taken, shared layers, issues."""

    def __init__(self, spec: FunctionalModel, path: KeyPath, prefix: str = ""):
        self.spec = spec
        self.path = path
        #: Starts every layer name of this model: ``<node>_`` for a sub-model, else empty.
        self.prefix = prefix
        self.issues: list[ConfigIssue] = []
        #: Keras layer name -> what made it (layer names must be unique in a model).
        self.taken: dict[str, str] = {}
        #: Shared layer -> the first call, for messages when a later call does not fit it.
        self.first_call: dict[int, str] = {}
        #: The model's ``layers:``, visible in every graph (blocks included).
        self.shared: dict[str, Any] = {}
        #: Node -> the output name its own layer takes (``outputs: {label: head}``).
        self.renamed: dict[str, str] = {}

    # -- the whole model ---------------------------------------------------------------

    def build(self, model_name: str) -> Any:
        spec, path = self.spec, self.path
        inputs = {}
        for name, item in spec.inputs.items():
            try:
                inputs[name] = keras.Input(shape=tuple(item.shape), dtype=item.dtype, name=name)
            except (TypeError, ValueError) as exc:
                self.issue(path + ("inputs", name), f"input '{name}': {reason(exc)}")
            self.claim(name, f"input '{name}'", path + ("inputs", name))
        self.shared = self.make_layers(spec.layers, "", path + ("layers",))
        self.raise_issues()

        scope = model_scope(spec, path)
        self.renamed = _renamed_outputs(scope)
        origins = {name: f"input '{name}'" for name in inputs}
        env = self.run(scope, dict(inputs), origins, "", {}, "")
        outputs = self.outputs(scope, env, "")
        self.raise_issues()
        model_inputs: Any = next(iter(inputs.values())) if len(inputs) == 1 else inputs
        model_outputs: Any = next(iter(outputs.values())) if len(outputs) == 1 else outputs
        try:
            return keras.Model(model_inputs, model_outputs, name=model_name)
        except (TypeError, ValueError) as exc:
            raise ConfigError.single(path, f"Keras cannot make the model: {reason(exc)}") from exc

    def outputs(self, scope: Scope, env: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        """The output tensors, each from a layer named after its output."""
        out: dict[str, Any] = {}
        for name, ref in scope.outputs.items():
            at = scope.output_paths[name]
            try:
                tensor = self.resolve(ref, env, at)
            except NodeFailed:
                continue
            layer_name = self.prefix + prefix + name
            if _producer(tensor) != layer_name:
                if not self.claim(layer_name, f"output '{name}'", at):
                    continue
                tensor = keras.layers.Identity(name=layer_name)(tensor)
            out[name] = tensor
        return out

    # -- one graph (the model's, or one instance of a block) ----------------------------

    def run(
        self, scope: Scope, env: dict[str, Any], origins: dict[str, str], prefix: str,
        local: Mapping[str, Any], note: str,
    ) -> dict[str, Any]:
        """Apply every node an output needs; returns the tensors by name (failed ones absent).

        ``prefix`` starts the names of the layers made here; ``local`` are the layers made
        from the scope's own ``layers:`` (a block instance's), seen before the model's;
        ``note`` says which block instance this is, for messages.
        """
        wanted, _ = needed(scope)
        for i in build_order(scope):
            if i not in wanted:
                continue
            node = scope.graph[i]
            at = scope.node_path(i)
            try:
                args = self.gather(node, env, at + ("inputs",))
                env[node.name] = self.apply(node, args, origins, scope, i, prefix,
                                            {**self.shared, **local}, note)
                origins[node.name] = scope.describe(i)
            except NodeFailed:
                continue
        return env

    def gather(self, node: GraphNode, env: Mapping[str, Any], at: KeyPath) -> Any:
        """The node's input tensors, in the form its ``inputs`` was written (str/list/dict)."""
        if isinstance(node.inputs, str):
            return self.resolve(node.inputs, env, at)
        if isinstance(node.inputs, list):
            return [self.resolve(ref, env, at + (i,)) for i, ref in enumerate(node.inputs)]
        return {key: self.resolve(ref, env, at + (key,)) for key, ref in node.inputs.items()}

    def resolve(self, ref: str, env: Mapping[str, Any], at: KeyPath) -> Any:
        """The tensor ``ref`` names: ``node`` or ``node.part`` of a multi-output node."""
        name, _, part = ref.partition(".")
        if name not in env:
            raise NodeFailed(ref)  # its node failed; that failure is already reported
        value = env[name]
        if not part:
            if isinstance(value, (dict, list, tuple)):
                parts = list(value) if isinstance(value, dict) else list(range(len(value)))
                self.issue(at, f"'{name}' has several outputs ({', '.join(map(str, parts))}): "
                           f"name one, e.g. '{name}.{parts[0]}'")
                raise NodeFailed(ref)
            return value
        if isinstance(value, dict) and part in value:
            return value[part]
        if isinstance(value, (list, tuple)) and part.isdigit() and int(part) < len(value):
            return value[int(part)]
        parts = (list(value) if isinstance(value, dict)
                 else list(map(str, range(len(value)))) if isinstance(value, (list, tuple)) else [])
        self.issue(at, f"'{name}' has no output '{part}'"
                   + (f" (its outputs: {', '.join(parts)})" if parts else " (it has one output)"),
                   suggestion=nearest(part, parts) if parts else None)
        raise NodeFailed(ref)

    def apply(
        self, node: GraphNode, args: Any, origins: Mapping[str, str],
        scope: Scope, index: int, prefix: str, layers: Mapping[str, Any], note: str,
    ) -> Any:
        """Apply what ``node`` names (layer, block, sub-model, application) to ``args``."""
        at = scope.node_path(index)
        if node.block is not None:
            return apply_block(self, node, args, origins, at, prefix, note)
        if node.layer is not None:
            layer = self.node_layer(node, at, prefix, layers)
            what = _layer_words(node, layer)
        elif node.model is not None:
            layer = self.submodel(node, at, prefix)
            what = f"the sub-model '{node.name}'"
            args = _submodel_args(node, layer, args, at, self)
        else:
            if not _is_tensor(args):
                self.issue(at + ("inputs",), f"an application takes one tensor (node "
                           f"'{node.name}' gives {len(args)})")
                raise NodeFailed(node.name)
            layer = self.application(node, args, at, prefix)
            what = f"the application '{spec_parts(node.application)[0]}'"
        return self.call(layer, args, node, at, origins, what, note)

    def call(self, layer: Any, args: Any, node: GraphNode, at: KeyPath,
             origins: Mapping[str, str], what: str, note: str) -> Any:
        """``layer(args)``; a failure names each input's shape and where it came from."""
        first = self.first_call.get(id(layer))
        if isinstance(args, dict) and node.layer is not None:
            if _unknown_call_keys(self, layer, args, at + ("inputs",)):
                raise NodeFailed(node.name)
        try:
            result = layer(**args) if isinstance(args, dict) and node.layer is not None else layer(args)
        except Exception as exc:  # Keras raises many types for shapes that do not fit
            given = _describe_inputs(node, args, origins)
            shared = ""
            if first is not None:
                shared = f" ({layer.name} is shared: it was first applied {first})"
            self.issue(at + ("inputs",), f"node '{node.name}'{note}: {what} cannot take "
                       f"{given}{shared}. Keras says: {reason(exc)}")
            raise NodeFailed(node.name) from exc
        if first is None and node.layer is not None:
            self.first_call[id(layer)] = f"by node '{node.name}' to {_shapes(args)}"
        return result

    # -- what a node applies --------------------------------------------------------------

    def make_layers(self, specs: Mapping[str, Any], prefix: str, at: KeyPath,
                    claim: bool = True) -> dict[str, Any]:
        """New layers for a ``layers:`` mapping, named ``prefix + key`` (None where it failed)."""
        made: dict[str, Any] = {}
        for key, spec in specs.items():
            name = self.prefix + prefix + key
            cls, kwargs = spec_parts(spec)
            made[key] = None
            if "name" in kwargs:
                self.issue(at + (key, cls, "name"), f"layer '{key}' is named by its key; "
                           "remove name:")
                continue
            try:
                made[key] = make_layer({cls: {**kwargs, "name": name}}, at + (key,))
            except ConfigError as exc:
                self.issues.extend(exc.issues)
                continue
            if claim:
                self.claim(name, f"layer '{key}' ({format_path(at + (key,))})", at + (key,))
        return made

    def node_layer(self, node: GraphNode, at: KeyPath, prefix: str, layers: Mapping[str, Any],
                   claim: bool = True) -> Any:
        """The shared layer a node names, or a new layer of its own named after the node."""
        if isinstance(node.layer, str) and node.layer in layers:
            if layers[node.layer] is None:  # its own definition failed, and says why
                raise NodeFailed(node.name)
            return layers[node.layer]
        cls, kwargs = spec_parts(node.layer)
        name = self.prefix + (prefix + node.name if prefix
                              else self.renamed.get(node.name, node.name))
        try:
            layer = make_layer({cls: {**kwargs, "name": name}}, at + ("layer",))
        except ConfigError as exc:
            if isinstance(node.layer, str):  # a bare name: a shared layer or a Keras class
                shared = nearest(cls, list(layers))
                self.issue(at + ("layer",), f"'{cls}' is neither a layer under layers: nor a "
                           "Keras layer class", suggestion=shared or nearest(cls, known_names("layer")))
            else:
                self.issues.extend(exc.issues)
            raise NodeFailed(node.name) from exc
        if claim and not self.claim(name, f"node '{node.name}' ({format_path(at)})", at + ("name",)):
            raise NodeFailed(node.name)
        return layer

    def submodel(self, node: GraphNode, at: KeyPath, prefix: str) -> Any:
        from kexp.model.sequential import build_sequential

        section = node.model
        name = self.prefix + prefix + node.name
        # its layers are named <node>_<layer>: two sub-models with the same inner names must
        # still give every weight its own name (optimizer slots, the HDF5 file)
        try:
            if section.sequential is not None:
                model = build_sequential(section.sequential, name, at + ("model", "sequential"),
                                         prefix=f"{name}_")
            else:
                model = build_functional(section.functional, name, at + ("model", "functional"),
                                         prefix=f"{name}_")
        except ConfigError as exc:
            self.issues.extend(exc.issues)
            raise NodeFailed(node.name) from exc
        self.claim_model(model, node, at)
        return model

    def application(self, node: GraphNode, tensor: Any, at: KeyPath, prefix: str) -> Any:
        name = self.prefix + prefix + node.name
        try:
            model = make_application(node.application, tuple(tensor.shape[1:]), name,
                                     at + ("application",), prefix=f"{name}_")
        except ConfigError as exc:
            self.issues.extend(exc.issues)
            raise NodeFailed(node.name) from exc
        self.claim_model(model, node, at)
        return model

    def claim_model(self, model: Any, node: GraphNode, at: KeyPath) -> None:
        """Take the names of a sub-model (or application) node and of every layer inside it.

        Keras itself only needs the top-level names to differ, but a weight is named after
        its layer alone (``h/kernel``), and the optimizer's slots and the ``.h5`` writer need
        every weight name once in the whole model. Inner layers are named ``<node>_<layer>``;
        this catches the rest (a node named ``a_h`` next to a sub-model ``a`` with a layer
        ``h``) before training rather than when the model is saved.
        """
        where = f"node '{node.name}' ({format_path(at)})"
        if not self.claim(model.name, where, at + ("name",)):
            raise NodeFailed(node.name)
        for layer in _inner_layers(model):  # the first clash is enough to say what to rename
            if not self.claim(layer.name, f"layer '{layer.name}' inside {where}", at + ("name",)):
                raise NodeFailed(node.name)

    # -- bookkeeping ------------------------------------------------------------------------

    def claim(self, name: str, what: str, at: KeyPath) -> bool:
        """Take a Keras layer name; a second layer of the same name is an issue."""
        if name in self.taken:
            self.issue(at, f"the layer name '{name}' of {what} is already taken by "
                       f"{self.taken[name]}; Keras needs every layer name once: rename one")
            return False
        self.taken[name] = what
        return True

    def issue(self, path: KeyPath, message: str, **kwargs: Any) -> None:
        self.issues.append(ConfigIssue(tuple(path), message, **kwargs))

    def raise_issues(self) -> None:
        if self.issues:
            unique = list({(i.path, i.message): i for i in self.issues}.values())
            raise ConfigError(unique)


def _inner_layers(model: Any) -> list[Any]:
    """Every layer inside ``model``, nested models included; input layers hold no weights."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(_inner_layers(layer))
    return found


def _renamed_outputs(scope: Scope) -> dict[str, str]:
    """Nodes whose layer can simply be named after the output they are (no Identity layer).

    ``outputs: {label: head}`` names the output ``label``; when ``head`` is a node with a
    layer of its own and nothing else is called ``label``, that layer is named ``label``.
    """
    taken = set(scope.inputs) | {node.name for node in scope.graph} | set(scope.layers)
    refs_to = [ref for ref in scope.outputs.values()]
    renamed = {}
    for out, ref in scope.outputs.items():
        node = next((n for n in scope.graph if n.name == ref), None)
        if (node is not None and out != ref and out not in taken and refs_to.count(ref) == 1
                and node.layer is not None and not (isinstance(node.layer, str)
                                                    and node.layer in scope.layers)):
            renamed[ref] = out
    return renamed


def _base(ref: str) -> str:
    return ref.split(".", 1)[0]


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "shape") and not isinstance(value, (dict, list, tuple))


def _producer(tensor: Any) -> str | None:
    history = getattr(tensor, "_keras_history", None)
    return history.operation.name if history is not None else None


def _layer_words(node: GraphNode, layer: Any) -> str:
    if isinstance(node.layer, str) and node.layer == layer.name:
        return f"the shared layer '{layer.name}' ({type(layer).__name__})"
    return type(layer).__name__


def _shape(tensor: Any) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in tensor.shape) + ")"


def _shapes(args: Any) -> str:
    if isinstance(args, dict):
        return ", ".join(f"{k}={_shape(v)}" for k, v in args.items())
    if isinstance(args, (list, tuple)):
        return "[" + ", ".join(_shape(t) for t in args) + "]"
    return f"shape {_shape(args)}"


def _describe_inputs(node: GraphNode, args: Any, origins: Mapping[str, str]) -> str:
    """``'h1' of shape (None, 64) from node 'h1' (model.functional.graph[1]) and ...``."""
    parts = []
    tensors = (list(args.values()) if isinstance(args, dict)
               else list(args) if isinstance(args, (list, tuple)) else [args])
    for (_, ref), tensor in zip(refs(node.inputs), tensors):
        source = origins.get(_base(ref), ref)
        parts.append(f"'{ref}' of shape {_shape(tensor)} from {source}")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _submodel_args(node: GraphNode, model: Any, args: Any, at: KeyPath, builder: GraphBuilder) -> Any:
    """A sub-model takes one tensor, or a dict by its input names (a list: in their order)."""
    names = [t.name for t in model.inputs]
    if len(names) == 1:
        if isinstance(args, dict) and len(args) == 1:
            return next(iter(args.values()))
        if isinstance(args, list) and len(args) == 1:
            return args[0]
        if _is_tensor(args):
            return args
    else:
        if isinstance(args, list) and len(args) == len(names):
            return dict(zip(names, args))
        if isinstance(args, dict) and set(args) == set(names):
            return args
    builder.issue(at + ("inputs",), f"the sub-model of node '{node.name}' takes "
                  f"{len(names)} input(s) ({', '.join(names)}); give "
                  + ("one tensor" if len(names) == 1 else "a list in that order or a mapping by name"))
    raise NodeFailed(node.name)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def reason(exc: BaseException) -> str:
    """The line of a Keras exception that says what is wrong (no wrapper lines, no colours)."""
    for line in _ANSI.sub("", str(exc)).splitlines():
        line = line.strip()
        if line and not line.startswith(("Exception encountered when calling", "Arguments received")):
            return line[:300]
    return type(exc).__name__


def _model_name(name: str) -> str:
    """Keras model names must be valid scope names: letters, digits, underscores."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _unknown_call_keys(builder: Any, layer: Any, args: Mapping[str, Any], at: KeyPath) -> bool:
    """The keys of a node's ``inputs`` mapping are arguments of the layer's ``call``: a
    misspelt ``valeu`` is said as such, not as Keras' "missing a required argument: 'value'".
    Returns whether there was one (each is recorded with ``builder.issue``)."""
    try:
        params = inspect.signature(layer.call).parameters.values()
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return False  # takes any keyword
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [key for key in args if key not in names]
    for key in unknown:
        builder.issue(at + (key,), f"{type(layer).__name__}'s call takes no argument '{key}' "
                      f"(it takes {', '.join(names)})", suggestion=nearest(key, names))
    return bool(unknown)


__all__ = ["build_functional", "output_map"]

