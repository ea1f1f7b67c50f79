"""What ``kexp validate`` shows of a model: a table of its layers, and optionally a picture.

Keras' own ``model.summary()`` lists layers but not which of them are shared, and a shared
layer is exactly what a graph author wants to confirm: one row per layer, one line per call
of it (output shape and the layers it takes from), a column saying how many nodes apply it,
and the parameter totals. ``plot`` draws the graph through ``keras.utils.model_to_dot`` when
pydot and graphviz are installed, and otherwise says what to install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

#: What to install for ``--plot``; printed when it is missing.
PLOT_NEEDS = (
    "--plot needs pydot and graphviz: pip install 'kexp[plot]' (or pip install pydot), and "
    "graphviz's `dot` program (apt-get install graphviz, brew install graphviz, or "
    "https://graphviz.org/download/)"
)


def _shape(shape: Any) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def layer_calls(model: Any, layer: Any) -> list[Any]:
    """The nodes (calls) of ``layer`` that are part of ``model``'s graph."""
    in_model = {id(node) for nodes in model._nodes_by_depth.values() for node in nodes}
    return [node for node in layer._inbound_nodes if id(node) in in_model]


def shared_layers(model: Any) -> dict[str, int]:
    """Layers applied by more than one node of ``model`` -> how many times (same weights)."""
    if not hasattr(model, "_nodes_by_depth"):
        return {}
    counts = {layer.name: len(layer_calls(model, layer)) for layer in model.layers}
    return {name: n for name, n in counts.items() if n > 1}


def _made_by(tensor: Any) -> str:
    """The layer that makes a tensor: an input's InputLayer, an output's (named) layer."""
    history = getattr(tensor, "_keras_history", None)
    return history.operation.name if history is not None else tensor.name


def _source(tensor: Any) -> str:
    """The layer a tensor comes from, as the config names it: with the part (``lstm.1``,
    ``encoder.code``) when that layer's call made several tensors."""
    history = tensor._keras_history
    operation = history.operation
    node = operation._inbound_nodes[history.node_index]
    if len(node.outputs) <= 1:
        return operation.name
    struct = getattr(operation, "_outputs_struct", None)  # a sub-model: its output names
    if isinstance(struct, dict):
        from kexp.tf import keras

        parts = [".".join(map(str, path)) for path, _ in keras.tree.flatten_with_path(struct)]
        if len(parts) == len(node.outputs):  # the order Keras flattens the outputs in
            return f"{operation.name}.{parts[history.tensor_index]}"
    return f"{operation.name}.{history.tensor_index}"


def _params(layer: Any) -> int:
    return sum(_size(w) for w in layer.weights)


def _size(variable: Any) -> int:
    size = 1
    for d in variable.shape:
        size *= int(d)
    return size


def summary_table(model: Any) -> Table:
    """One row per layer: type, output shape(s), inputs, parameters and how often applied.

    The ``shared`` column appears when some layer is applied by more than one node.
    """
    graph = hasattr(model, "_nodes_by_depth")
    rows = []
    previous = _made_by(model.inputs[0]) if model.inputs else "-"
    for layer in model.layers:
        calls = layer_calls(model, layer) if graph else []
        shapes = [", ".join(_shape(t.shape) for t in node.outputs) for node in calls]
        takes = [
            ", ".join(_source(t) for t in node.input_tensors) or "-"
            for node in calls
        ]
        if not calls:  # a Sequential model: a chain, each layer takes the one before
            output = getattr(layer, "output", None)
            shapes = [_shape(output.shape)] if output is not None else ["?"]
            takes = [previous]
        previous = layer.name
        rows.append((layer.name, type(layer).__name__, shapes, takes, _params(layer), len(calls)))
    shared = any(row[5] > 1 for row in rows)
    table = Table(title=f"model '{model.name}'", title_justify="left")
    table.add_column("layer", overflow="fold")
    table.add_column("type", overflow="ellipsis")
    table.add_column("output shape", no_wrap=True)
    table.add_column("takes", overflow="fold")
    table.add_column("params", justify="right", no_wrap=True)
    if shared:
        table.add_column("shared", justify="right", no_wrap=True)
    for name, kind, shapes, takes, params, calls in rows:
        cells = [name, kind, "\n".join(shapes), "\n".join(takes), f"{params:,}"]
        if shared:
            cells.append(f"{calls}x" if calls > 1 else "")
        table.add_row(*cells)
    return table


def render_summary(model: Any, console: Console) -> None:
    """Print the summary table, parameter totals, inputs and outputs, and shared layers."""
    console.print(summary_table(model))
    trainable = sum(_size(w) for w in model.trainable_weights)
    frozen = sum(_size(w) for w in model.non_trainable_weights)
    console.print(f"parameters: {trainable + frozen:,} ({trainable:,} trainable, "
                  f"{frozen:,} non-trainable)", highlight=False)
    inputs = ", ".join(f"{_made_by(t)} {_shape(t.shape)}" for t in model.inputs)
    console.print(f"inputs: {inputs}", highlight=False, markup=False)
    outputs = ", ".join(f"{_made_by(t)} {_shape(t.shape)}" for t in model.outputs)
    console.print(f"outputs: {outputs}", highlight=False, markup=False)
    shared = shared_layers(model)
    if shared:
        listed = ", ".join(f"{name} ({n} nodes)" for name, n in shared.items())
        console.print(f"shared layers (one set of weights each): {listed}", highlight=False,
                      markup=False)


def plot(model: Any, file: Path) -> str | None:
    """Draw the graph into ``file`` (png, svg, pdf, ... by suffix); a note if it cannot.

    Returns None when the picture was written, else what to install. The picture is written
    to a temporary name and renamed, so a failure never leaves half a file.
    """
    from kexp.tf import keras
    from kexp.training.artifacts import atomic_path

    if not plotting_available():
        return PLOT_NEEDS
    # model_to_dot, not plot_model: plot_model hands the file to IPython when it is
    # installed, which cannot show svg and complains only by printing when pydot is missing
    try:
        dot = keras.utils.model_to_dot(model, show_shapes=True, show_layer_names=True,
                                       expand_nested=True, dpi=96)
    except ImportError:
        return PLOT_NEEDS
    if dot is None:
        return PLOT_NEEDS
    with atomic_path(Path(file)) as tmp:
        dot.write(str(tmp), format=Path(file).suffix.lstrip(".") or "png")
    return None


def plotting_available() -> bool:
    """pydot importable and graphviz's ``dot`` runnable (Keras' own check, done up front)."""
    try:
        import pydot
    except ImportError:
        return False
    try:
        pydot.Dot.create(pydot.Dot())
    except (OSError, pydot.PydotException):
        return False
    return True
