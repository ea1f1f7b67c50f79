"""The shipped plugin example through the real CLI: train with custom components named in a
plugin file, evaluate and predict with nothing passed (the run's plugins are re-imported), a
changed plugin reported, and plain ``keras.models.load_model`` in a fresh process.

Three processes (train, predict, plain Keras); evaluate runs in-process to save a TF start."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import yaml

from conftest import CONFIGS, DATA, cli, only_run


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
