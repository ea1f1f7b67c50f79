"""A run's recorded plugins, used again: each file is imported under the module name the run
recorded (never another plugin file under its name); evaluate/predict/reproduce refuse a run
whose plugin is gone or fails to import (unless its model saves no custom component); resume
refuses a plugin whose file changed or is gone, and never rewrites the recorded sha256."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, assert_user_error, cli, only_run, shipped, write_config

LAYER = textwrap.dedent("""
    import keras

    class Scale(keras.layers.Layer):
        def __init__(self, f=1.0, **kwargs):
            super().__init__(**kwargs)
            self.f = f

        def call(self, x):
            return x * self.f{extra}

        def get_config(self):
            return {{**super().get_config(), "f": self.f}}
""")


def _plugin(folder: Path, name: str, extra: str = "") -> Path:
    """A plugin file ``folder/name`` defining the layer ``Scale`` (x * f, then ``extra``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(LAYER.format(extra=extra))
    return path


def _config(tmp_path: Path, plugins: list[Path], layer: str, name: str = "c.yaml",
            root: str = "runs") -> Path:
    config = shipped("iris_mlp.yaml", train={"epochs": 1}, callbacks=[],
                     output={"root": str(tmp_path / root), "tensorboard": False})
    config["checkpoint"] = {"save_best": False, "save_last": False}
    config["plugins"] = [str(p) for p in plugins]
    layers = [{"Dense": {"units": 3, "activation": "softmax"}}]
    if layer:
        layers.insert(0, {layer: {"f": 2.0}})
    config["model"] = {"sequential": {"input": {"shape": [4]}, "layers": layers}}
    return write_config(tmp_path / name, config)


def _train_cli(config: Path, root: Path) -> Path:
    done = cli(["train", config])
    assert done.returncode == 0, done.stdout + done.stderr
    return only_run(root)


def test_evaluate_and_predict_refuse_a_run_whose_plugin_is_gone_or_broken(tmp_path: Path) -> None:
    """Two plugin files named comp.py: the run records a as `comp`, b under another name.
    With a gone, b used to be imported as `comp` and the model loaded with b's class (a
    hundred times the output, exit 0): now evaluate and predict refuse, naming a's file."""
    a = _plugin(tmp_path / "pl" / "a", "comp.py")
    b = _plugin(tmp_path / "pl" / "b", "comp.py", extra=" * 100")
    run = _train_cli(_config(tmp_path, [a, b], "comp>Scale"), tmp_path / "runs")
    records = json.loads((run / "manifest.json").read_text())["plugins"]
    assert [r["module"] for r in records][0] == "comp"
    assert records[1]["module"].startswith("kexp_plugin_comp_")

    ok = cli(["evaluate", run, "--data", DATA / "iris_train.csv"])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "plugin of the run" not in ok.stderr

    a.write_text("raise RuntimeError('broken on purpose')\n")
    done = cli(["predict", run, "--input", DATA / "iris_test.csv",
                "--output", tmp_path / "p.csv"])
    assert_user_error(done, str(a), "cannot be imported", "broken on purpose",
                      "cannot be loaded faithfully")
    assert not (tmp_path / "p.csv").exists()

    a.unlink()
    done = cli(["evaluate", run, "--data", DATA / "iris_train.csv"])
    assert_user_error(done, f"{a} is missing", "cannot be loaded faithfully", "Restore the file")
    done = cli(["reproduce", run])
    assert_user_error(done, f"plugin file not found: {a}", "trained with these plugins")
    assert len([p for p in (tmp_path / "runs").glob("*/*") if p.is_dir()]) == 1  # no rerun


def test_each_recorded_plugin_file_gets_its_recorded_module_name(tmp_path: Path) -> None:
    """Two runs, each with its own twin.py recorded as module `twin`, loaded in one process:
    each model gets its own file's class (the second file takes the name over), not the class
    of whichever file the process imported first under that name."""
    from kexp.runs import load_model, resolve_target
    from kexp.training.run import train

    a = _plugin(tmp_path / "a", "twin.py")
    b = _plugin(tmp_path / "b", "twin.py", extra=" * 100")
    # run b in a fresh process: its file is recorded as `twin` there too
    run_b = _train_cli(_config(tmp_path, [b], "twin>Scale", "b.yaml", "runs_b"),
                       tmp_path / "runs_b")
    sys.modules.pop("twin", None)
    from kexp.config import load_config

    run_a = train(load_config(_config(tmp_path, [a], "twin>Scale", "a.yaml", "runs_a")),
                  output_root=tmp_path / "runs_a").directory
    for run in (run_a, run_b):
        assert json.loads((run / "manifest.json").read_text())["plugins"][0]["module"] == "twin"

    ones = np.ones((1, 4), dtype="float32")
    for run, factor, file in ((run_b, 200.0, b), (run_a, 2.0, a), (run_b, 200.0, b)):
        target = resolve_target(run)
        assert target.plugin_notes == ()
        layer = load_model(target.model_file).layers[0]
        assert Path(sys.modules[type(layer).__module__].__file__) == file, run
        np.testing.assert_allclose(np.asarray(layer(ones)), ones * factor)


def test_a_missing_plugin_the_model_does_not_use_is_only_reported(tmp_path: Path) -> None:
    """A model with no custom component loads faithfully without the plugin: a warning."""
    from kexp.config import load_config
    from kexp.runs import resolve_target, uses_custom_objects
    from kexp.training.run import train

    plugin = _plugin(tmp_path / "unused", "unused_layers.py")
    run = train(load_config(_config(tmp_path, [plugin], "")),
                output_root=tmp_path / "runs").directory
    for fmt in ("keras", "h5"):
        assert not uses_custom_objects(run / f"model.{fmt}")
    plugin.unlink()
    target = resolve_target(run)
    assert target.plugin_notes == (
        f"{plugin} is missing (the model saves no custom component, so it is not needed)",)


def test_resume_refuses_a_changed_or_missing_plugin_and_keeps_its_hash(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path / "pl", "resumed_layer.py")
    run = _train_cli(_config(tmp_path, [plugin], "resumed_layer>Scale"), tmp_path / "runs")
    before = (run / "manifest.json").read_text()
    recorded = json.loads(before)["plugins"][0]["sha256"]

    original = plugin.read_text()
    plugin.write_text(LAYER.format(extra=" * 3"))  # the layer computes something else
    from kexp.plugins import sha256

    edited = sha256(plugin)
    done = cli(["resume", run, "--set", "train.epochs=42"])
    assert_user_error(done, str(plugin), recorded[:12], edited[:12], "Restore the plugin",
                      "start a new run")
    assert (run / "manifest.json").read_text() == before  # nothing written

    plugin.unlink()
    done = cli(["resume", run, "--set", "train.epochs=42"])
    assert_user_error(done, f"plugin file not found: {plugin}", "trained with these plugins",
                      "restore the file")
    assert (run / "manifest.json").read_text() == before

    plugin.write_text(original)  # restored: the resume trains, the record is the run's
    done = cli(["resume", run, "--set", "train.epochs=2"])
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["epochs_completed"] == 2
    assert manifest["plugins"][0]["sha256"] == recorded


def test_resume_refuses_before_the_manifest_when_the_imported_plugin_differs(
    tmp_path: Path,
) -> None:
    """The check again right before a resume writes the manifest (a file edited between the
    plan and the import): the records imported then are compared with the run's."""
    from kexp.errors import UserError
    from kexp.training.resume import refuse_changed_plugins

    record = {"entry": "/p/x.py", "module": "x", "path": "/p/x.py", "sha256": "a" * 64}
    refuse_changed_plugins(tmp_path, [record], [dict(record)])  # the same: fine
    with pytest.raises(UserError, match=r"/p/x.py changed since the run used it \(sha256 "
                                        r"aaaaaaaaaaaa recorded, bbbbbbbbbbbb now\)"):
        refuse_changed_plugins(tmp_path, [record], [{**record, "sha256": "b" * 64}])
    with pytest.raises(UserError, match="/p/x.py is missing"):
        refuse_changed_plugins(tmp_path, [record], [])
