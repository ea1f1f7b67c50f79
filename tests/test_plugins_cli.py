"""The shipped plugin example through the real CLI: train with custom components named in a
plugin file, evaluate and predict with nothing passed (the run's plugins are re-imported), a
changed plugin reported, and plain ``keras.models.load_model`` in a fresh process; and every
kind of component a model saves, reloaded by plain Keras in a fresh process.

Three processes (train, predict, plain Keras); evaluate runs in-process to save a TF start."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import CONFIGS, DATA, REPO, cli, only_run


def test_shipped_plugin_config_trains_reloads_and_reports_a_changed_plugin(tmp_path: Path) -> None:
    plugin = tmp_path / "components.py"
    shutil.copy(CONFIGS / "plugins" / "components.py", plugin)
    config = yaml.safe_load((CONFIGS / "plugins" / "digits_custom.yaml").read_text())
    assert config["plugins"] == ["components.py"]  # relative to the config: tmp_path here
    for split in ("train", "test"):
        config["data"][split]["path"] = str(DATA / Path(config["data"][split]["path"]).name)
    config["train"] = {"epochs": 1}
    config["output"] = {"root": str(tmp_path / "runs"), "tensorboard": False}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    done = cli(["train", tmp_path / "c.yaml"])
    assert done.returncode == 0, done.stdout + done.stderr
    run = only_run(tmp_path / "runs")
    (record,) = json.loads((run / "manifest.json").read_text())["plugins"]
    assert record["path"] == str(plugin) and len(record["sha256"]) == 64

    # kexp evaluate, in this process (which never imported the plugin): the run's plugin is
    # imported from its manifest, nothing passed (a subprocess would cost another TF start)
    from kexp.evaluation import evaluate
    from kexp.runs import resolve_target

    assert resolve_target(run).plugin_notes == ()  # unchanged: nothing to report
    metrics = evaluate(run)["metrics"]
    trained = json.loads((run / "evaluation.json").read_text())["metrics"]
    assert metrics["macro_f1"] == trained["macro_f1"] and "loss" in metrics

    plugin.write_text(plugin.read_text() + "\n# edited after the run\n")
    done = cli(["predict", run, "--input", DATA / "digits_test.npz", "--x", "images",
                "--output", tmp_path / "predictions.npz"])
    assert done.returncode == 0, done.stderr
    assert f"warning: plugin of the run: {plugin} (content changed since the run)" in done.stderr
    probs = np.load(tmp_path / "predictions.npz")
    kexp_probs = np.stack([probs[f"prob_{i}"] for i in range(10)], axis=1)

    # plain Keras, in a fresh process, after importing the plugin module (documented)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        sys.path.insert(0, {str(tmp_path)!r})
        import components, keras
        images = np.load({str(DATA / "digits_test.npz")!r})["images"]
        out = {{}}
        for fmt in ("keras", "h5"):
            model = keras.models.load_model({str(run)!r} + "/model." + fmt)
            assert type(model.loss).__name__ == "SparseFocalLoss", model.loss
            assert any(type(l).__name__ == "SqueezeExcite" for l in model.layers)
            out[fmt] = model.predict(images, verbose=0)
        np.savez({str(tmp_path / "plain.npz")!r}, **out)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert done.returncode == 0, done.stderr
    plain = np.load(tmp_path / "plain.npz")
    np.testing.assert_allclose(plain["keras"], kexp_probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plain["h5"], kexp_probs, rtol=1e-5, atol=1e-6)


def _saved_kinds() -> dict:
    """test_plugins.EVERY_KIND with only components the plugin registers itself: what plain
    Keras can find after ``import kinds``. (Its undecorated HalfInit and top_probability are
    registered by kexp when it imports the plugin, so a plain process does not know them;
    docs/plugins.md says to decorate.) The callback is never saved in a model."""
    from test_plugins import EVERY_KIND

    config = copy.deepcopy(EVERY_KIND)
    hidden = config["model"]["sequential"]["layers"][0]["Dense"]
    hidden["bias_initializer"] = {"ScaledOnes": {"value": 0.5}}
    config["compile"]["metrics"] = ["accuracy", "MeanConfidence"]
    return config


_PLAIN_KERAS = """
import json, sys
import numpy as np
sys.path.insert(0, {plugins!r})
import kinds          # the plugin module: its decorators register the components
import keras
data = np.load({data!r})
report = {{}}
for fmt in ("keras", "h5"):
    model = keras.models.load_model({run!r} + "/model." + fmt)
    hidden = model.get_layer("hidden")
    schedule = model.optimizer.get_config()["learning_rate"]
    report[fmt] = {{
        "kinds": {{
            "layer": type(model.layers[1]) is kinds.Scale,
            "activation": hidden.activation is kinds.soft_clip,
            "initializer": isinstance(hidden.kernel_initializer, kinds.ScaledOnes)
                           and isinstance(hidden.bias_initializer, kinds.ScaledOnes),
            "regularizer": isinstance(hidden.kernel_regularizer, kinds.SumOfSquares),
            "constraint": isinstance(hidden.kernel_constraint, kinds.ClipTo),
            "optimizer": type(model.optimizer) is kinds.DampedSGD
                         and model.optimizer.damping == 0.5,
            "schedule": schedule["registered_name"] == "kinds_test>LinearWarmup"
                        and schedule["config"]["warmup_steps"] == {warmup},
            "loss": type(model.loss) is kinds.WeightedSparseCrossentropy
                    and model.loss.weights == [1.0, 2.0, 1.0],
        }},
        "predictions": model.predict(data["x"], verbose=0).tolist(),
        "evaluation": model.evaluate(data["x"], data["y"], return_dict=True, verbose=0),
    }}
report["kexp imported"] = any(name.split(".")[0] == "kexp" for name in sys.modules)
print(json.dumps(report))
"""


@pytest.mark.slow
def test_every_saved_kind_reloads_with_plain_keras_in_a_fresh_process(tmp_path: Path) -> None:
    """Layer, activation, initializer, regularizer, constraint, optimizer, schedule (given
    in epochs), loss and metric, from a plugin: a process that never imported kexp, only the
    plugin module, loads model.keras and model.h5 and gets the same outputs and metrics."""
    from test_plugins import _iris, _train

    run = _train(tmp_path, _iris(tmp_path, **_saved_kinds()))
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    y = np.array([0, 1, 2, 1, 0, 2])
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    expected = run.model.predict(x, verbose=0)
    expected_eval = run.model.evaluate(x, y, return_dict=True, verbose=0)
    assert {"loss", "accuracy", "mean_confidence"} <= set(expected_eval)

    script = _PLAIN_KERAS.format(plugins=str(REPO / "tests" / "plugins"), run=str(run.directory),
                                 data=str(tmp_path / "xy.npz"), warmup=2 * 6)  # 6 steps/epoch
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["kexp imported"] is False
    for fmt in ("keras", "h5"):
        assert all(report[fmt]["kinds"].values()), (fmt, report[fmt]["kinds"])
        np.testing.assert_allclose(report[fmt]["predictions"], expected, rtol=1e-5, atol=1e-6)
        got = report[fmt]["evaluation"]
        assert set(got) == set(expected_eval), fmt
        for key, value in expected_eval.items():
            assert got[key] == pytest.approx(value, rel=1e-5), (fmt, key)
