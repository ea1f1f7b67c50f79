"""What a functional config builds: shared layers (one object, one set of weights), blocks
(own weights per instance and repetition), sub-models and keras.applications as nodes,
multi-output nodes, per-output compile arguments, and the summary table and plot."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from conftest import DATA
from kexp.config import load_config_text
from kexp.errors import ConfigError
from kexp.model import build_model, compile_model
from kexp.model.build import resolve_compile
from kexp.model.summary import PLOT_NEEDS, layer_calls, plot, plotting_available, render_summary


def loaded(model: str, compile_: str = "loss: sparse_categorical_crossentropy",
           x: str = "images", y: str = "labels") -> object:
    text = (
        f"name: t\n"
        f"data:\n  train: {{source: npz, path: {DATA / 'digits_train.npz'}, x: {x}, y: {y}}}\n"
        f"model:\n  functional:\n{textwrap.indent(textwrap.dedent(model).strip(), '    ')}\n"
        f"compile:\n{textwrap.indent(textwrap.dedent(compile_).strip(), '  ')}\n"
    )
    return load_config_text(text)


def build(model: str, **kwargs: str) -> object:
    config = loaded(model, **kwargs).config
    built = build_model(config)
    compile_model(built, config)
    return built


SHARED = """
inputs: {pixels: {shape: [8, 8, 1]}}
layers:
  encoder: {Dense: {units: 16, activation: relu}}
graph:
  - {name: flat, layer: Flatten, inputs: pixels}
  - {name: pre, layer: {Dense: {units: 16}}, inputs: flat}
  - {name: h1, layer: encoder, inputs: pre}
  - {name: h2, layer: encoder, inputs: h1}
  - {name: digit, layer: {Dense: {units: 10, activation: softmax}}, inputs: h2}
outputs: [digit]
"""


def test_a_shared_layer_is_one_object_with_one_set_of_weights() -> None:
    model = build(SHARED)
    encoder = model.get_layer("encoder")
    calls = layer_calls(model, encoder)
    assert len(calls) == 2  # applied by h1 and by h2
    assert all(call.operation is encoder for call in calls)
    # h2's call takes h1's tensor, which the very same layer object made
    assert calls[1].input_tensors[0]._keras_history.operation is encoder
    paths = [w.path for w in model.weights]
    assert paths.count("encoder/kernel") == 1 and paths.count("encoder/bias") == 1
    assert len({id(w) for w in model.weights}) == len(model.weights) == 6
    assert model.count_params() == 64 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10


BLOCKS = """
inputs: {pixels: {shape: [8, 8, 1]}}
blocks:
  residual:
    inputs: [x]
    layers:
      mix: {Dense: {units: 64}}          # shared by the two nodes of one instance
    graph:
      - {name: h, layer: mix, inputs: x}
      - {name: h2, layer: mix, inputs: h}
      - {name: y, layer: {Add: {}}, inputs: [x, h2]}
    outputs: [y]
graph:
  - {name: flat, layer: Flatten, inputs: pixels}
  - {name: deep, block: residual, repeat: 3, inputs: flat}
  - {name: again, block: residual, inputs: deep}
  - {name: digit, layer: {Dense: {units: 10, activation: softmax}}, inputs: again}
outputs: [digit]
"""


def test_block_instances_and_repetitions_have_their_own_weights() -> None:
    model = build(BLOCKS)
    names = [layer.name for layer in model.layers]
    for instance in ("deep_1_", "deep_2_", "deep_3_", "again_"):
        assert instance + "mix" in names and instance + "y" in names
        mix = model.get_layer(instance + "mix")
        assert len(layer_calls(model, mix)) == 2  # the block's own shared layer, per instance
    kernels = [model.get_layer(f"{i}mix").kernel for i in ("deep_1_", "deep_2_", "deep_3_", "again_")]
    assert len({id(k) for k in kernels}) == 4
    assert model.count_params() == 4 * (64 * 64 + 64) + 64 * 10 + 10


NODES = """
inputs: {pixels: {shape: [8, 8, 1]}}
blocks:
  two:
    inputs: [x]
    graph:
      - {name: a, layer: {Dense: {units: 8}}, inputs: x}
      - {name: b, layer: {Dense: {units: 4}}, inputs: x}
    outputs: [a, b]
graph:
  - {name: flat, layer: Flatten, inputs: pixels}
  - name: head
    model: {sequential: {input: {shape: [64]}, layers: [{Dense: {units: 16}}, {Dense: {units: 20}}]}}
    inputs: flat
  - name: join
    model:
      functional:
        inputs: {p: {shape: [20]}, q: {shape: [64]}}
        graph: [{name: c, layer: Concatenate, inputs: [p, q]}]
        outputs: [c]
    inputs: [head, flat]
  - {name: t, block: two, inputs: join}
  - {name: seq, layer: {Reshape: {target_shape: [4, 5]}}, inputs: head}
  - {name: att, layer: {MultiHeadAttention: {num_heads: 2, key_dim: 4}}, inputs: {query: seq, value: seq}}
  - {name: pooled, layer: Flatten, inputs: att}
  - {name: j, layer: Concatenate, inputs: [t.a, t.b, pooled]}
  - {name: digit, layer: {Dense: {units: 10, activation: softmax}}, inputs: j}
outputs: {digit: digit, code: t.b}
"""


def test_sub_models_multi_output_blocks_and_call_arguments() -> None:
    model = build(NODES, compile_="loss: {digit: sparse_categorical_crossentropy, code: mse}",
                  y="{digit: labels, code: stats}")
    assert type(model.get_layer("head")).__name__ == "Sequential"
    assert type(model.get_layer("join")).__name__ == "Functional"
    assert model.get_layer("join").output.shape == (None, 84)
    assert model.get_layer("att").output.shape == (None, 4, 5)
    assert sorted(model.output_names) == ["code", "digit"]
    assert model.get_layer("code").output.shape == (None, 4)  # t.b, named after the output


def test_a_block_with_several_outputs_must_be_referred_to_by_part() -> None:
    bad = NODES.replace("inputs: [t.a, t.b, pooled]", "inputs: [t, pooled]")
    with pytest.raises(ConfigError) as caught:
        build(bad, compile_="loss: {digit: sparse_categorical_crossentropy, code: mse}",
              y="{digit: labels, code: stats}")
    (issue,) = caught.value.issues
    assert issue.path == ("model", "functional", "graph", 7, "inputs", 0)
    assert "'t' has several outputs (a, b): name one, e.g. 't.a'" in issue.message
    wrong_part = NODES.replace("t.b, pooled", "t.c, pooled")
    with pytest.raises(ConfigError) as caught:
        build(wrong_part, compile_="loss: {digit: sparse_categorical_crossentropy, code: mse}",
              y="{digit: labels, code: stats}")
    assert "has no output 'c'" in str(caught.value)


APPLICATION = """
inputs: {pixels: {shape: [8, 8, 1]}}
graph:
  - {name: up, layer: {UpSampling2D: {size: 4}}, inputs: pixels}
  - {name: rgb, layer: Concatenate, inputs: [up, up, up]}
  - {name: backbone, application: {MobileNet: {alpha: 0.25, include_top: false, pooling: avg}}, inputs: rgb}
  - {name: digit, layer: {Dense: {units: 10, activation: softmax}}, inputs: backbone}
outputs: [digit]
"""


def test_a_keras_application_as_a_backbone_node() -> None:
    model = build(APPLICATION)
    backbone = model.get_layer("backbone")
    assert backbone.input_shape == (None, 32, 32, 3)
    assert backbone.output.shape == (None, 256)
    with pytest.raises(ConfigError) as caught:
        build(APPLICATION.replace("MobileNet:", "MobileNett:").replace("size: 4", "size: 1"))
    assert "did you mean 'MobileNet'" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        build(APPLICATION.replace("size: 4", "size: 1"))
    (issue,) = caught.value.issues
    assert issue.path == ("model", "functional", "graph", 2, "application", "MobileNet")
    assert "(8, 8, 3)" in issue.message


def test_an_application_keeps_weights_loaded_from_a_file(tmp_path: Path) -> None:
    """Its layers are renamed <node>_<layer> by a clone, which must not lose the weights."""
    import numpy as np

    from kexp.tf import keras

    source = keras.applications.MobileNet(alpha=0.25, include_top=False, pooling="avg",
                                          weights=None, input_shape=(32, 32, 3))
    file = tmp_path / "backbone.weights.h5"
    source.save_weights(file)
    model = build(APPLICATION.replace("pooling: avg}", f"pooling: avg, weights: {file}}}"))
    backbone = model.get_layer("backbone")
    assert backbone.layers[0].name.startswith("backbone_input_layer")
    assert [layer.name for layer in backbone.layers[1:3]] == ["backbone_conv1", "backbone_conv1_bn"]
    assert len(backbone.weights) == len(source.weights)
    for mine, theirs in zip(backbone.weights, source.weights):
        assert mine.path == "backbone_" + theirs.path
        assert np.array_equal(mine.numpy(), theirs.numpy()), mine.path


def test_two_identical_applications_save_and_reload_with_their_optimizer_state(
        tmp_path: Path) -> None:
    """Two MobileNets once gave two weights the path conv1/kernel: the optimizer's slots then
    shared a name and the .h5 writer refused the model after training. Building the slots
    is what training does to the optimizer, without 30 s of tracing two backbones."""
    import numpy as np

    from kexp.tf import keras

    two = APPLICATION.replace(
        "  - {name: digit, layer: {Dense: {units: 10, activation: softmax}}, inputs: backbone}",
        "  - {name: second, application: {MobileNet: {alpha: 0.25, include_top: false, "
        "pooling: avg}}, inputs: rgb}\n"
        "  - {name: both, layer: Concatenate, inputs: [backbone, second]}\n"
        "  - {name: digit, layer: {Dense: {units: 10, activation: softmax}}, inputs: both}")
    model = build(two)
    model.optimizer.build(model.trainable_variables)
    slots = [v.path for v in model.optimizer.variables]
    assert len(set(slots)) == len(slots)
    assert "backbone_conv1/kernel" in [w.path for w in model.weights]
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    expected = model.predict(x, verbose=0)
    for name in ("model.keras", "model.h5"):
        model.save(tmp_path / name)
        reloaded = keras.models.load_model(tmp_path / name)
        assert np.array_equal(reloaded.predict(x, verbose=0), expected), name


SUB_MODEL_NAMES = """
inputs: {pixels: {shape: [8, 8, 1]}}
graph:
  - {name: flat, layer: Flatten, inputs: pixels}
  - name: a
    model: {functional: {inputs: {x: {shape: [64]}}, outputs: [h],
                         graph: [{name: h, layer: {Dense: {units: 4}}, inputs: x}]}}
    inputs: flat
  - {name: a_h, layer: {Dense: {units: 4}}, inputs: flat}
  - {name: j, layer: Concatenate, inputs: [a, a_h]}
  - {name: digit, layer: {Dense: {units: 10, activation: softmax}}, inputs: j}
outputs: [digit]
"""


def test_layers_inside_sub_models_are_named_after_the_node_and_must_be_unique() -> None:
    """Two sub-models may name their layers alike (each is prefixed with its node), but a
    weight named twice in the whole model is refused before training, not when saving."""
    twice = SUB_MODEL_NAMES.replace("{name: a_h, layer: {Dense: {units: 4}}, inputs: flat}", (
        "{name: b, model: {functional: {inputs: {x: {shape: [64]}}, outputs: [h], "
        "graph: [{name: h, layer: {Dense: {units: 4}}, inputs: x}]}}, inputs: flat}"
    )).replace("[a, a_h]", "[a, b]")
    model = build(twice)
    paths = [w.path for w in model.weights]
    assert "a_h/kernel" in paths and "b_h/kernel" in paths
    assert len(set(paths)) == len(paths)
    with pytest.raises(ConfigError) as caught:
        build(SUB_MODEL_NAMES)
    (issue,) = caught.value.issues
    assert issue.path == ("model", "functional", "graph", 2, "name")
    assert ("the layer name 'a_h' of node 'a_h' (model.functional.graph[2]) is already taken "
            "by layer 'a_h' inside node 'a' (model.functional.graph[1])") in issue.message


TWO_OUTPUTS = """
inputs: {pixels: {shape: [8, 8, 1]}}
graph:
  - {name: flat, layer: Flatten, inputs: pixels}
  - {name: digit, layer: {Dense: {units: 10, activation: softmax}}, inputs: flat}
  - {name: parity, layer: {Dense: {units: 1, activation: sigmoid}}, inputs: flat}
outputs: [digit, parity]
"""
Y2 = "{digit: labels, parity: parity}"


def test_per_output_loss_weights_and_metrics() -> None:
    config = loaded(TWO_OUTPUTS, y=Y2, compile_="""
        loss: {digit: sparse_categorical_crossentropy, parity: binary_crossentropy}
        loss_weights: [1.0, 0.3]
        metrics: [accuracy, {AUC: {name: auc}}]
    """).config
    args = resolve_compile(config)
    assert set(args["loss"]) == {"digit", "parity"}
    assert args["loss_weights"] == {"digit": 1.0, "parity": 0.3}
    # a metric list applies to every output, with its own metric objects
    assert args["metrics"]["digit"][0] == args["metrics"]["parity"][0] == "accuracy"
    assert args["metrics"]["digit"][1] is not args["metrics"]["parity"][1]
    # one loss for a two-output model: every output gets it; missing weights are 1
    config = loaded(TWO_OUTPUTS, y=Y2, compile_="""
        loss: mse
        loss_weights: {parity: 2.0}
    """).config
    args = resolve_compile(config)
    assert set(args["loss"]) == {"digit", "parity"}
    assert args["loss_weights"] == {"digit": 1.0, "parity": 2.0}


@pytest.mark.parametrize("compile_, path, gist", [
    ("loss: {digit: mse, parity: mse}\nloss_weights: [1.0]", ("compile", "loss_weights"),
     "1 weight(s) for 2 output(s)"),
    ("loss: {digit: mse, parity: mse}\nloss_weights: {parityy: 1.0}",
     ("compile", "loss_weights", "parityy"), "did you mean 'parity'"),
    ("loss: {digit: mse, parity: mse}\nmetrics: {digits: [accuracy]}",
     ("compile", "metrics", "digits"), "did you mean 'digit'"),
    ("loss: {digit: mse, parity: mse, extra: mse}", ("compile", "loss", "extra"),
     "the model has no output 'extra'"),
])
def test_per_output_keys_must_name_outputs(compile_: str, path: tuple, gist: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_compile(loaded(TWO_OUTPUTS, y=Y2, compile_=compile_).config)
    (issue,) = caught.value.issues
    assert issue.path == path and gist in str(issue)


def test_a_single_output_keyed_by_its_name_is_one_loss() -> None:
    one = TWO_OUTPUTS.replace("outputs: [digit, parity]", "outputs: [digit]") \
        .replace("  - {name: parity", "#")
    model = build(one, compile_="loss: {digit: sparse_categorical_crossentropy}\n"
                                "metrics: {digit: [accuracy]}\nloss_weights: {digit: 1.0}")
    assert model.output_names == ["digit"]


def test_summary_table_marks_shared_layers() -> None:
    model = build(SHARED)
    console = Console(record=True, width=160)
    render_summary(model, console)
    text = console.export_text()
    lines = text.splitlines()
    row = next(i for i, line in enumerate(lines) if "encoder" in line and "Dense" in line)
    assert "2x" in lines[row] and "(None, 16)" in lines[row] and "pre" in lines[row]
    second_call = lines[row + 1].split("│")  # one line per call: h2 takes encoder's output
    assert "(None, 16)" in second_call[3] and "encoder" in second_call[4]
    assert "shared layers (one set of weights each): encoder (2 nodes)" in text
    assert f"parameters: {model.count_params():,}" in text
    assert "inputs: pixels (None, 8, 8, 1)" in text and "outputs: digit (None, 10)" in text


def test_summary_names_the_part_a_layer_takes_of_a_multi_output_node() -> None:
    model = build("""
        inputs: {pixels: {shape: [8, 8]}}
        graph:
          - {name: lstm, layer: {LSTM: {units: 4, return_state: true}}, inputs: pixels}
          - name: sub
            model: {functional: {inputs: {p: {shape: [4]}}, outputs: [b, a], graph: [
              {name: a, layer: {Dense: {units: 2}}, inputs: p},
              {name: b, layer: {Dense: {units: 3}}, inputs: p}]}}
            inputs: lstm.1
          - {name: j, layer: Concatenate, inputs: [lstm.0, lstm.2, sub.b, sub.a]}
          - {name: digit, layer: {Dense: {units: 10, activation: softmax}}, inputs: j}
        outputs: [digit]
    """)
    console = Console(record=True, width=200)
    render_summary(model, console)
    rows = {line.split("│")[1].strip(): line.split("│")[4].strip()
            for line in console.export_text().splitlines() if line.count("│") > 4}
    assert rows["sub"] == "lstm.1"
    assert rows["j"] == "lstm.0, lstm.2, sub.b, sub.a"


def test_plot_says_what_to_install_when_it_cannot_draw(tmp_path: Path, monkeypatch) -> None:
    import kexp.model.summary as summary

    model = build(SHARED)
    monkeypatch.setattr(summary, "plotting_available", lambda: False)
    assert plot(model, tmp_path / "g.png") == PLOT_NEEDS
    assert "pip install" in PLOT_NEEDS and "graphviz" in PLOT_NEEDS
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not plotting_available(),
                    reason="needs pydot and graphviz's dot program (pip install pydot; "
                    "apt-get install graphviz), which CI's fresh venv does not have")
def test_plot_draws_the_graph(tmp_path: Path) -> None:
    model = build(SHARED)
    assert plot(model, tmp_path / "g.png") is None
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot(model, tmp_path / "g.svg") is None
    svg = (tmp_path / "g.svg").read_text()
    assert "encoder" in svg and "digit" in svg


NESTED = """
inputs: {pixels: {shape: [8, 8, 1]}}
layers:
  tied: {Dense: {units: 64, use_bias: false}}     # the model's: shared by every instance
blocks:
  inner:
    inputs: [x]
    graph:
      - {name: t, layer: tied, inputs: x}
      - {name: y, layer: Add, inputs: [x, t]}
    outputs: [y]
  outer:
    inputs: [x]
    graph:
      - {name: a, block: inner, repeat: 2, inputs: x}
      - {name: b, layer: {Dense: {units: 64}}, inputs: a}
    outputs: [b]
graph:
  - {name: flat, layer: Flatten, inputs: pixels}
  - {name: o, block: outer, repeat: 2, inputs: flat}
  - {name: digit, layer: {Dense: {units: 10, activation: softmax}}, inputs: o}
outputs: [digit]
"""


def test_blocks_nest_and_may_share_the_models_layers() -> None:
    model = build(NESTED)
    names = {layer.name for layer in model.layers}
    assert {"o_1_a_1_y", "o_1_a_2_y", "o_2_a_2_y", "o_1_b", "o_2_b"} <= names
    tied = model.get_layer("tied")
    assert len(layer_calls(model, tied)) == 4  # 2 outer x 2 inner repetitions, one kernel
    assert model.count_params() == 64 * 64 + 2 * (64 * 64 + 64) + 64 * 10 + 10


RENAMED = """
inputs: {pixels: {shape: [8, 8, 1]}}
layers:
  classify: {Dense: {units: 10, activation: softmax}}
graph:
  - {name: flat, layer: Flatten, inputs: pixels}
  - {name: head, layer: {Dense: {units: 1, activation: sigmoid}}, inputs: flat}
  - {name: shared_head, layer: classify, inputs: flat}
outputs: {odd: head, digit: shared_head}
"""


def test_outputs_are_named_as_declared_and_predict_knows_their_activation() -> None:
    import numpy as np

    from kexp.prediction import prediction_columns

    model = build(RENAMED, compile_="loss: {odd: binary_crossentropy, digit: sparse_categorical_crossentropy}",
                  y="{odd: parity, digit: labels}")
    assert sorted(model.output_names) == ["digit", "odd"]
    names = [layer.name for layer in model.layers]
    assert "odd" in names and "head" not in names  # its own layer: simply named after the output
    assert type(model.get_layer("digit")).__name__ == "Identity"  # a shared layer keeps its name
    x = np.load(DATA / "digits_test.npz")["images"][:5]
    columns = prediction_columns(model, model.predict(x, verbose=0))
    assert "digit_prob_9" in columns and "digit_predicted_label" in columns
    assert "odd_probability" in columns and "odd_predicted_label" in columns


@pytest.mark.parametrize("weights, given", [("[1.0, 2.0]", "2 weights"),
                                            ("{dense: 2.0}", "a mapping")])
def test_loss_weights_of_a_sequential_model_are_one_weight(weights: str, given: str) -> None:
    """Was: accepted by validate, then Keras' error at compile time reported at compile.loss."""
    from conftest import CONFIGS

    text = (CONFIGS / "iris_mlp.yaml").read_text().replace(
        "  loss: sparse_categorical_crossentropy",
        f"  loss: sparse_categorical_crossentropy\n  loss_weights: {weights}")
    with pytest.raises(ConfigError) as caught:
        resolve_compile(load_config_text(text, CONFIGS).config)
    (issue,) = caught.value.issues
    assert issue.path == ("compile", "loss_weights")
    assert f"a Sequential model has one output, so one weight, [w], but {given}" in issue.message
    one = text.replace(f"loss_weights: {weights}", "loss_weights: [2.0]")
    assert resolve_compile(load_config_text(one, CONFIGS).config)["loss_weights"] == [2.0]
