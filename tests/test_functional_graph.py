"""Graph mistakes in a functional model: each reported by ``kexp validate`` (Typer's app, in
this process) at the node's exact key path and YAML line, with exit code 2 and no traceback,
before any data is read; unused nodes and inputs are warnings, not errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import DATA
from kexp.cli import app

HEAD = f"""\
name: graph-check
data:
  train: {{source: npz, path: {DATA / 'digits_train.npz'}, x: X_KEYS, y: Y_KEYS}}
model:
  functional:
"""


def config(tmp_path: Path, graph: str, *, loss: str = "sparse_categorical_crossentropy",
           x: str = "images", y: str = "labels", extra: str = "") -> Path:
    """A config file: ``graph`` is the body of ``model.functional`` (dedented YAML)."""
    body = textwrap.indent(textwrap.dedent(graph).strip("\n"), "    ")
    text = HEAD.replace("X_KEYS", x).replace("Y_KEYS", y) + body + f"\ncompile:\n  loss: {loss}\n"
    path = tmp_path / "graph.yaml"
    path.write_text(text + textwrap.dedent(extra))
    return path


def line_of(path: Path, fragment: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if fragment in line:
            return number
    raise AssertionError(fragment)


def validate(path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["validate", str(path), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def assert_reported(path: Path, key: str, line_fragment: str, *gists: str) -> str:
    """Exit 2, no traceback, and a message ``file:line: key: ...`` holding every gist."""
    code, text = validate(path)
    assert code == 2, text
    assert "Traceback" not in text, text
    located = f"{path}:{line_of(path, line_fragment)}: {key}: "
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith(located)]
    assert lines, f"no line starting with {located!r} in:\n{text}"
    for gist in gists:
        assert gist in lines[0], f"{gist!r} not in {lines[0]!r}"
    return text


RESIDUAL = """
inputs:
  pixels: {shape: [8, 8, 1]}
graph:
  - {name: flat, layer: Flatten, inputs: pixels}
  - {name: a, layer: {Dense: {units: 64}}, inputs: flat}
  - {name: b, layer: {Dense: {units: B_UNITS}}, inputs: a}
  - {name: res, layer: {Add: {}}, inputs: [a, b]}
  - {name: digit, layer: {Dense: {units: 10, activation: softmax}}, inputs: res}
outputs: [digit]
"""


def test_a_sound_graph_validates_and_shows_the_summary(tmp_path: Path) -> None:
    code, text = validate(config(tmp_path, RESIDUAL.replace("B_UNITS", "64")))
    assert code == 0, text
    assert "ok:" in text and "res" in text and "Add" in text
    assert "parameters: " in text and "outputs: digit (None, 10)" in text


def test_shape_mismatch_names_both_shapes_and_where_they_came_from(tmp_path: Path) -> None:
    path = config(tmp_path, RESIDUAL.replace("B_UNITS", "32"))
    assert_reported(
        path, "model.functional.graph[3].inputs", "name: res",
        "node 'res'", "Add cannot take",
        "'a' of shape (None, 64) from node 'a' (model.functional.graph[1])",
        "'b' of shape (None, 32) from node 'b' (model.functional.graph[2])",
    )


def test_a_misspelt_call_argument_is_named_as_such(tmp_path: Path) -> None:
    """Was: "Keras says: missing a required argument: 'value'", not that 'valeu' is unknown."""
    path = config(tmp_path, """
        inputs:
          pixels: {shape: [8, 8]}
        graph:
          - {name: att, layer: {MultiHeadAttention: {num_heads: 2, key_dim: 4}}, inputs: {query: pixels, valeu: pixels}}
          - {name: flat, layer: Flatten, inputs: att}
          - {name: digit, layer: {Dense: {units: 10, activation: softmax}}, inputs: flat}
        outputs: [digit]
    """)
    text = assert_reported(path, "model.functional.graph[0].inputs.valeu", "name: att",
                           "MultiHeadAttention's call takes no argument 'valeu' (it takes query, "
                           "value, key,", "did you mean 'value'?")
    assert "missing a required argument" not in text
    path.write_text(path.read_text().replace("valeu", "value"))
    code, text = validate(path)
    assert code == 0, text


def test_undefined_tensor_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = config(tmp_path, RESIDUAL.replace("B_UNITS", "64").replace("inputs: [a, b]", "inputs: [a, bb]"))
    assert_reported(path, "model.functional.graph[3].inputs[1]", "name: res",
                    "node 'res' takes 'bb', which is not defined", "did you mean 'b'")


def test_undefined_output(tmp_path: Path) -> None:
    path = config(tmp_path, RESIDUAL.replace("B_UNITS", "64").replace("outputs: [digit]", "outputs: [digits]"))
    assert_reported(path, "model.functional.outputs[0]", "outputs: [digits]",
                    "undefined tensor 'digits'", "did you mean 'digit'")


def test_cycle_lists_the_nodes_around_it(tmp_path: Path) -> None:
    graph = RESIDUAL.replace("B_UNITS", "64").replace(
        "{name: a, layer: {Dense: {units: 64}}, inputs: flat}",
        "{name: a, layer: {Dense: {units: 64}}, inputs: b}")
    assert_reported(config(tmp_path, graph), "model.functional.graph[1].inputs", "name: a,",
                    "node 'a' depends on itself through a cycle: a -> b -> a")
    longer = RESIDUAL.replace("B_UNITS", "64").replace(
        "{name: flat, layer: Flatten, inputs: pixels}", "{name: flat, layer: Flatten, inputs: digit}")
    assert_reported(config(tmp_path, longer), "model.functional.graph[0].inputs", "name: flat,",
                    "cycle: flat -> a -> res -> digit -> flat")


def test_a_cycle_through_a_merge_is_reported_once_with_both_loops(tmp_path: Path) -> None:
    graph = RESIDUAL.replace("B_UNITS", "64").replace(
        "{name: a, layer: {Dense: {units: 64}}, inputs: flat}",
        "{name: a, layer: {Dense: {units: 64}}, inputs: res}")
    text = assert_reported(config(tmp_path, graph), "model.functional.graph[1].inputs", "name: a,",
                           "node 'a' depends on itself through cycles: a -> res -> a; "
                           "a -> b -> res -> a (each feeds the next)")
    assert "1 problem in the config" in text and text.count("depends on itself") == 1, text


def test_nodes_may_be_listed_in_any_order(tmp_path: Path) -> None:
    lines = RESIDUAL.replace("B_UNITS", "64").strip().splitlines()
    graph_lines = lines[3:8]
    shuffled = "\n".join(lines[:3] + graph_lines[::-1] + lines[8:])
    code, text = validate(config(tmp_path, shuffled))
    assert code == 0, text


def test_unused_node_and_input_are_warnings(tmp_path: Path) -> None:
    graph = RESIDUAL.replace("B_UNITS", "64").replace(
        "pixels: {shape: [8, 8, 1]}", "pixels: {shape: [8, 8, 1]}\n  spare: {shape: [4]}"
    ).replace("outputs: [digit]",
              "  - {name: side, layer: {Dense: {units: 3}}, inputs: a}\noutputs: [digit]")
    path = config(tmp_path, graph, x="{pixels: images, spare: stats}")
    code, text = validate(path)
    assert code == 0, text
    side = f"warning: {path}:{line_of(path, 'name: side')}: model.functional.graph[5]: node 'side' does not lead to any output"
    spare = f"warning: {path}:{line_of(path, 'spare: {shape')}: model.functional.inputs.spare: input 'spare' is not used"
    assert side in text, text
    assert spare in text, text


def test_loss_keys_must_match_the_outputs(tmp_path: Path) -> None:
    graph = RESIDUAL.replace("B_UNITS", "64").replace(
        "outputs: [digit]",
        "  - {name: parity, layer: {Dense: {units: 1, activation: sigmoid}}, inputs: res}\n"
        "outputs: [digit, parity]")
    path = config(tmp_path, graph, loss="{digt: sparse_categorical_crossentropy, parity: binary_crossentropy}",
                  y="{digit: labels, parity: parity}")
    assert_reported(path, "compile.loss.digt", "loss:", "the model has no output 'digt'",
                    "its outputs: digit, parity", "did you mean 'digit'")


def test_a_missing_loss_is_named(tmp_path: Path) -> None:
    graph = RESIDUAL.replace("B_UNITS", "64").replace(
        "outputs: [digit]",
        "  - {name: parity, layer: {Dense: {units: 1, activation: sigmoid}}, inputs: res}\n"
        "outputs: [digit, parity]")
    path = config(tmp_path, graph, loss="{digit: sparse_categorical_crossentropy}",
                  y="{digit: labels, parity: parity}")
    assert_reported(path, "compile.loss", "loss:", "no loss for output(s) parity")


def test_label_keys_must_match_the_outputs(tmp_path: Path) -> None:
    graph = RESIDUAL.replace("B_UNITS", "64").replace(
        "outputs: [digit]",
        "  - {name: parity, layer: {Dense: {units: 1, activation: sigmoid}}, inputs: res}\n"
        "outputs: [digit, parity]")
    path = config(tmp_path, graph, loss="{digit: sparse_categorical_crossentropy, parity: binary_crossentropy}",
                  y="{digit: labels, party: parity}")
    code, text = validate(path)
    assert code == 2 and "Traceback" not in text
    assert f"{path}:{line_of(path, 'train:')}: data.train.y.party: the model has no output 'party'" in text
    assert "did you mean 'parity'" in text
    assert "data.train.y: no array for the model's output(s) parity" in text


def test_features_of_a_multi_input_model_are_keyed_by_input(tmp_path: Path) -> None:
    graph = RESIDUAL.replace("B_UNITS", "64").replace(
        "pixels: {shape: [8, 8, 1]}", "pixels: {shape: [8, 8, 1]}\n  stats: {shape: [4]}")
    assert_reported(config(tmp_path, graph), "data.train.x", "train:",
                    "the model has 2 inputs (pixels, stats)", "{input name: key}")


SHARED = """
inputs:
  pixels: {shape: [8, 8, 1]}
layers:
  encoder: {Dense: {units: 16, activation: relu}}
graph:
  - {name: flat, layer: Flatten, inputs: pixels}
  - {name: h1, layer: encoder, inputs: flat}
  - {name: h2, layer: encoder, inputs: h1}
  - {name: digit, layer: {Dense: {units: 10, activation: softmax}}, inputs: h2}
outputs: [digit]
"""


def test_a_shared_layer_that_does_not_fit_its_second_use(tmp_path: Path) -> None:
    assert_reported(config(tmp_path, SHARED), "model.functional.graph[2].inputs", "name: h2",
                    "the shared layer 'encoder' (Dense) cannot take 'h1' of shape (None, 16)",
                    "first applied by node 'h1' to shape (None, 64)")


def test_layer_name_and_argument_mistakes_are_all_reported(tmp_path: Path) -> None:
    graph = SHARED.replace("units: 16", "unit: 16").replace("layer: Flatten", "layer: Flaten") \
        .replace("layer: encoder, inputs: h1", "layer: encodr, inputs: h1")
    path = config(tmp_path, graph)
    code, text = validate(path)
    assert code == 2, text
    for key, fragment, gist in [
        ("model.functional.layers.encoder.Dense.unit", "encoder:", "did you mean 'units'"),
        ("model.functional.graph[0].layer", "name: flat", "did you mean 'Flatten'"),
        ("model.functional.graph[2].layer", "name: h2", "did you mean 'encoder'"),
    ]:
        assert f"{path}:{line_of(path, fragment)}: {key}: " in text, text
        assert gist in text


def test_a_node_named_like_an_input_or_twice(tmp_path: Path) -> None:
    graph = SHARED.replace("{name: h2,", "{name: h1,").replace("inputs: h2}", "inputs: h1}")
    assert_reported(config(tmp_path, graph), "model.functional.graph[2].name", "layer: encoder, inputs: h1",
                    "node name 'h1' is used twice (first at graph[1])")
    graph = SHARED.replace("{name: flat,", "{name: pixels,").replace("inputs: flat", "inputs: pixels")
    assert_reported(config(tmp_path, graph), "model.functional.graph[0].name", "layer: Flatten",
                    "already the name of an input")


def test_a_node_must_apply_exactly_one_thing(tmp_path: Path) -> None:
    graph = SHARED.replace("{name: flat, layer: Flatten,", "{name: flat, layer: Flatten, block: x,")
    assert_reported(config(tmp_path, graph), "model.functional.graph[0]", "name: flat",
                    "exactly one of layer, block, model, application", "layer and block")


BLOCKS = """
inputs:
  pixels: {shape: [8, 8, 1]}
blocks:
  residual:
    inputs: [x]
    graph:
      - {name: h, layer: {Dense: {units: H_UNITS, activation: relu}}, inputs: x}
      - {name: y, layer: {Add: {}}, inputs: [x, h]}
    outputs: [y]
graph:
  - {name: flat, layer: Flatten, inputs: pixels}
  - {name: deep, block: residual, repeat: 3, inputs: flat}
  - {name: digit, layer: {Dense: {units: 10, activation: softmax}}, inputs: deep}
outputs: [digit]
"""


def test_a_shape_mismatch_inside_a_block_names_the_instance(tmp_path: Path) -> None:
    assert_reported(config(tmp_path, BLOCKS.replace("H_UNITS", "32")),
                    "model.functional.blocks.residual.graph[1].inputs", "name: y,",
                    "in block 'residual' (instance 'deep', repetition 1 of 3, model.functional.graph[1])",
                    "'x' of shape (None, 64)", "'h' of shape (None, 32)")


def test_block_mistakes(tmp_path: Path) -> None:
    unknown = BLOCKS.replace("H_UNITS", "64").replace("block: residual,", "block: residul,")
    assert_reported(config(tmp_path, unknown), "model.functional.graph[1].block", "name: deep",
                    "no block 'residul'", "did you mean 'residual'")
    arity = BLOCKS.replace("H_UNITS", "64").replace("inputs: flat}", "inputs: [flat, flat]}")
    assert_reported(config(tmp_path, arity), "model.functional.graph[1].inputs", "name: deep",
                    "gives 2 tensors, but block 'residual' takes 1 input(s): x")
    repeat = BLOCKS.replace("H_UNITS", "64").replace("layer: Flatten,", "layer: Flatten, repeat: 2,")
    assert_reported(config(tmp_path, repeat), "model.functional.graph[0].repeat", "name: flat",
                    "repeat applies to blocks only")
    recursive = BLOCKS.replace("H_UNITS", "64").replace(
        "{name: h, layer: {Dense: {units: 64, activation: relu}}, inputs: x}",
        "{name: h, block: residual, inputs: x}")
    assert_reported(config(tmp_path, recursive), "model.functional.blocks.residual.graph[0].block",
                    "name: h, block: residual", "block 'residual' instantiates itself")
    unknown_ref = BLOCKS.replace("H_UNITS", "64").replace("inputs: [x, h]", "inputs: [x, flat]")
    assert_reported(config(tmp_path, unknown_ref), "model.functional.blocks.residual.graph[1].inputs[1]",
                    "name: y,", "'flat', which is not defined: no input or node of this block")


def test_graph_errors_come_before_the_data_is_read(tmp_path: Path) -> None:
    """The npz file has no such keys: reading it would fail, but the graph error comes first."""
    path = config(tmp_path, RESIDUAL.replace("B_UNITS", "32"), x="no_images", y="no_labels")
    result = CliRunner().invoke(app, ["train", str(path), "--output-root", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert "model.functional.graph[3].inputs" in result.output
    assert "no_images" not in result.output and "no_labels" not in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("model, gist", [
    ("model: {}", "give exactly one of sequential, functional"),
    ("model:\n  sequential: {input: {shape: [4]}, layers: [Dense]}\n  functional: FUNC",
     "(found both)"),
])
def test_exactly_one_kind_of_model(tmp_path: Path, model: str, gist: str) -> None:
    func = "{inputs: {a: {shape: [4]}}, graph: [{name: b, layer: Dense, inputs: a}], outputs: [b]}"
    path = tmp_path / "c.yaml"
    path.write_text(f"name: t\ndata:\n  train: {{source: npz, path: x.npz}}\n"
                    f"{model.replace('FUNC', func)}\ncompile: {{loss: mse}}\n")
    code, text = validate(path)
    assert code == 2 and gist in text and f"{path}:4: model: " in text, text


CSV_MODEL = f"""\
name: csv-keys
data:
  train: {{source: csv, path: {DATA / 'breast_cancer_train.csv'}, KEYS}}
model:
  functional:
    inputs: {{mean: {{shape: [2]}}, worst: {{shape: [2]}}}}
    graph:
      - {{name: j, layer: Concatenate, inputs: [mean, worst]}}
      - {{name: malignant, layer: {{Dense: {{units: 1, activation: sigmoid}}}}, inputs: j}}
      - {{name: size, layer: {{Dense: {{units: 1}}}}, inputs: j}}
    outputs: [malignant, size]
compile:
  loss: {{malignant: binary_crossentropy, size: mse}}
"""
CSV_FEATURES = "features: {mean: [mean_radius, mean_area], worst: [worst_area, worst_texture]}"


@pytest.mark.parametrize("keys, key, gists", [
    (f"{CSV_FEATURES}, label: malignant", "data.train.label",
     ["the model has 2 outputs (malignant, size)", "give label as a mapping {output name: column}"]),
    ("label: {malignant: malignant, size: worst_radius}", "data.train.features",
     ["the model has 2 inputs (mean, worst)", "give features as a mapping {input name: [columns]}"]),
    (f"{CSV_FEATURES}, label: {{malignat: malignant, size: worst_radius}}",
     "data.train.label.malignat", ["the model has no output 'malignat'", "did you mean 'malignant'"]),
])
def test_csv_columns_of_a_multi_input_output_model_are_keyed_by_name(
        tmp_path: Path, keys: str, key: str, gists: list[str]) -> None:
    """Reported before any data is read, at the key; not as a loss that does not fit."""
    path = tmp_path / "csv.yaml"
    path.write_text(CSV_MODEL.replace("KEYS", keys))
    text = assert_reported(path, key, "train:", *gists)
    assert "compile.loss" not in text
    path.write_text(CSV_MODEL.replace(
        "KEYS", f"{CSV_FEATURES}, label: {{malignant: malignant, size: worst_radius}}"))
    code, text = validate(path)
    assert code == 0, text
