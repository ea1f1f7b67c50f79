"""Tests for kexp.environment (the reproducibility record in every manifest)."""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from kexp import environment

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def record() -> dict[str, Any]:
    """One full record shared by the tests: collecting imports TensorFlow (slow)."""
    return environment.collect()


def test_top_level_keys(record: dict[str, Any]) -> None:
    assert set(record) == {
        "python",
        "os",
        "cpu",
        "memory",
        "versions",
        "tensorflow_build",
        "devices",
        "numerics",
        "packages",
        "collected_at",
    }


def test_without_packages() -> None:
    assert "packages" not in environment.collect(include_packages=False)


def test_record_is_json_roundtrip_stable(record: dict[str, Any]) -> None:
    # The manifest stores JSON; a stored record must compare equal to a live one.
    restored = json.loads(json.dumps(record))
    assert restored == record
    assert environment.diff(record, restored) == []


def test_python_os_cpu_memory(record: dict[str, Any]) -> None:
    py = record["python"]
    assert py["version"] == ".".join(str(p) for p in sys.version_info[:3])
    assert isinstance(py["implementation"], str) and py["implementation"]
    assert py["executable"] == sys.executable

    assert set(record["os"]) == {"system", "release", "version", "machine", "platform"}
    assert all(isinstance(v, str) for v in record["os"].values())

    cpu = record["cpu"]
    assert set(cpu) == {"model", "logical_cores", "usable_cores"}
    assert cpu["logical_cores"] == os.cpu_count()
    if hasattr(os, "sched_getaffinity"):
        assert cpu["usable_cores"] == len(os.sched_getaffinity(0))
    assert cpu["model"] is None or isinstance(cpu["model"], str)

    mem = record["memory"]
    assert set(mem) == {"total_bytes", "available_bytes"}
    if sys.platform.startswith("linux"):
        assert isinstance(mem["total_bytes"], int) and mem["total_bytes"] > 0
        assert isinstance(mem["available_bytes"], int)
        assert 0 <= mem["available_bytes"] <= mem["total_bytes"]
    else:
        assert mem == {"total_bytes": None, "available_bytes": None}


def test_versions_match_metadata(record: dict[str, Any]) -> None:
    versions = record["versions"]
    assert set(versions) == {
        "kexp",
        "tensorflow",
        "keras",
        "numpy",
        "h5py",
        "pyyaml",
        "typer",
        "rich",
        "pydantic",
    }
    for key, dist in environment.FRAMEWORK_PACKAGES.items():
        if key == "kexp":
            continue  # may come from kexp.__version__ in a source checkout
        try:
            expected: str | None = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            expected = None
        assert versions[key] == expected, key
    assert versions["tensorflow"] is not None
    assert versions["keras"] is not None
    assert versions["kexp"] is None or isinstance(versions["kexp"], str)


def test_tensorflow_build_matches_build_info(record: dict[str, Any]) -> None:
    import tensorflow as tf

    info = tf.sysconfig.get_build_info()
    build = record["tensorflow_build"]
    assert build["cuda_build"] is bool(info.get("is_cuda_build", False))
    assert build["rocm_build"] is bool(info.get("is_rocm_build", False))
    assert build["is_built_with_cuda"] is bool(tf.test.is_built_with_cuda())
    if build["cuda_build"]:
        assert build["cuda_version"] == str(info["cuda_version"])
        assert build["cudnn_version"] == str(info["cudnn_version"])
        assert build["description"] == (
            f"CUDA {info['cuda_version']} / cuDNN {info['cudnn_version']} build"
        )
    elif not build["rocm_build"]:
        assert build["description"] == "CPU build"


def test_devices(record: dict[str, Any]) -> None:
    import tensorflow as tf

    devices = record["devices"]
    assert set(devices) == {"cpus", "gpus", "tpus"}
    assert len(devices["cpus"]) == len(tf.config.list_physical_devices("CPU")) >= 1
    assert devices["cpus"][0]["device_type"] == "CPU"
    assert len(devices["gpus"]) == len(tf.config.list_physical_devices("GPU"))
    for gpu in devices["gpus"]:
        assert set(gpu) == {"name", "device_type", "details", "memory_total_bytes"}
        assert set(gpu["details"]) == {"device_name", "compute_capability"}
    assert isinstance(devices["tpus"], list)


def test_numerics_settings_are_recorded_and_diffed(monkeypatch: pytest.MonkeyPatch) -> None:
    # what changes float results with the same versions: a reproduce mismatch must be able
    # to name it (TF_ENABLE_ONEDNN_OPTS changes CPU results; threads change reduction order)
    import tensorflow as tf

    for name in list(os.environ):
        if name.startswith(("TF_", "OMP_", "KMP_", "MKL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    monkeypatch.setenv("TF_TOKEN_app_terraform_io", "s3cret")  # Terraform's, not TensorFlow's
    monkeypatch.setenv("TF_VAR_password", "s3cret")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # log verbosity only
    monkeypatch.setenv("MKL_AUTH_KEY", "s3cret")
    before = environment.collect(include_packages=False)
    numbers = before["numerics"]
    assert numbers["env"] == {"MKL_AUTH_KEY": "<redacted>", "OMP_NUM_THREADS": "2",
                              "PYTHONHASHSEED": "0"}
    assert numbers["intra_op_threads"] == tf.config.threading.get_intra_op_parallelism_threads()
    assert numbers["inter_op_threads"] == tf.config.threading.get_inter_op_parallelism_threads()
    assert isinstance(numbers["op_determinism"], bool)
    assert "s3cret" not in json.dumps(before)

    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    after = environment.collect(include_packages=False)
    assert environment.diff(before, after, ignore=("collected_at", "memory")) == [
        ("numerics.env.TF_ENABLE_ONEDNN_OPTS", None, "0")]

    console = Console(record=True, width=120)
    environment.render(after, console)
    text = console.export_text()
    assert "Settings that change numerics" in text and "TF_ENABLE_ONEDNN_OPTS" in text
    assert "TF op determinism" in text


def test_tpu_listing_never_raises() -> None:
    class Broken:
        class config:  # noqa: N801 - mimics tf.config
            @staticmethod
            def list_physical_devices(device_type: str) -> list[Any]:
                raise RuntimeError("no TPU runtime")

    assert environment._list_devices(Broken, "TPU") == []


def test_nvidia_smi_parsing_and_matching() -> None:
    smi = environment._parse_nvidia_smi(
        "NVIDIA A100-SXM4-40GB, 40960\nNVIDIA A100-SXM4-40GB, 40960\nTesla T4, 15360\n"
    )
    assert smi[0] == {"name": "NVIDIA A100-SXM4-40GB", "memory_total_bytes": 40960 * 1024**2}
    # Matched by model name even if TF's order differs from nvidia-smi's.
    assert environment._match_gpu_memory(0, "Tesla T4", smi) == 15360 * 1024**2
    assert environment._match_gpu_memory(2, "NVIDIA A100-SXM4-40GB", smi) == 40960 * 1024**2
    # Unknown name -> positional fallback; no nvidia-smi -> None.
    assert environment._match_gpu_memory(1, None, smi) == 40960 * 1024**2
    assert environment._match_gpu_memory(0, "Tesla T4", None) is None


def test_packages(record: dict[str, Any]) -> None:
    packages = record["packages"]
    assert packages == sorted(packages)
    names = [p.split("==", 1)[0] for p in packages]
    assert len(names) == len(set(names)), "deduplicated by normalized name"
    tf_version = importlib.metadata.version("tensorflow")
    assert f"tensorflow=={tf_version}" in packages


def test_package_names_and_versions_as_the_email_parser_reads_them(tmp_path: Path) -> None:
    """The header scan answers what ``dist.metadata``/``dist.version`` answer: for every
    installed distribution, and for metadata whose body mentions Name/Version again, with
    folded or repeated headers and other letter cases, and for PKG-INFO-only egg-info."""
    for dist in importlib.metadata.distributions():
        assert environment._name_and_version(dist) == (dist.metadata["Name"], dist.version)
    site = tmp_path / "site"
    cases = {
        "plain-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: plain\nVersion: 1.0\n",
        "body-2.0.dist-info/METADATA": (
            "Metadata-Version: 2.1\r\nname:  Body_Pkg \r\nSummary: one\r\n  Name: folded\r\n"
            "VERSION: 2.0\r\nVersion: 9.9\r\n\r\nName: from-the-body\nVersion: 0\n"),
        "late-3.0.dist-info/METADATA": "Metadata-Version: 2.1\nSummary: x\n\nName: late\n",
        "old.egg-info/PKG-INFO": "Metadata-Version: 1.0\nName: old\nVersion: 0.1\n\nbody\n",
    }
    for relative, text in cases.items():
        (site / relative).parent.mkdir(parents=True)
        (site / relative).write_text(text, newline="")
    dists = {d._path.name: d for d in importlib.metadata.distributions(path=[str(site)])}
    assert len(dists) == len(cases)
    for dist in dists.values():
        assert environment._name_and_version(dist) == (dist.metadata["Name"], dist.version)
    assert environment._name_and_version(dists["body-2.0.dist-info"]) == ("Body_Pkg ", "2.0")
    assert environment._name_and_version(dists["late-3.0.dist-info"]) == (None, None)


def test_render_mentions_versions(record: dict[str, Any]) -> None:
    console = Console(record=True, width=120)
    environment.render(record, console)
    text = console.export_text()
    for title in ("System", "Frameworks", "TensorFlow build", "Devices"):
        assert title in text
    assert record["versions"]["tensorflow"] in text
    assert record["python"]["version"] in text
    assert record["tensorflow_build"]["description"] in text
    assert f"Installed packages: {len(record['packages'])}" in text
    # The full list is not printed.
    assert not all(p in text for p in record["packages"])


def test_render_tolerates_partial_record() -> None:
    console = Console(record=True, width=120)
    environment.render({"versions": {"tensorflow": None}}, console)
    text = console.export_text()
    assert "not installed" in text
    assert "TensorFlow not available" in text


def _fake_record() -> dict[str, Any]:
    return {
        "python": {"version": "3.11.7", "implementation": "CPython", "executable": "/x"},
        "versions": {"tensorflow": "2.21.0", "numpy": "2.1.0"},
        "devices": {"cpus": [{"name": "/physical_device:CPU:0", "device_type": "CPU"}]},
        "packages": ["numpy==2.1.0", "PyYAML==6.0.2", "tensorflow==2.21.0"],
        "collected_at": "2025-01-01T00:00:00+00:00",
    }


def test_diff_changed_removed_added_and_ignored() -> None:
    a = _fake_record()
    b = copy.deepcopy(a)
    b["versions"]["numpy"] = "1.26.4"
    b["packages"] = ["numpy==1.26.4", "pyyaml==6.0.2", "scipy==1.14.0"]
    b["collected_at"] = "2030-01-01T00:00:00+00:00"

    changes = environment.diff(a, b)
    assert ("versions.numpy", "2.1.0", "1.26.4") in changes
    assert ("packages.numpy", "2.1.0", "1.26.4") in changes
    assert ("packages.tensorflow", "2.21.0", None) in changes  # removed
    assert ("packages.scipy", None, "1.14.0") in changes  # added
    # "PyYAML" vs "pyyaml" is the same package.
    assert not any(path == "packages.pyyaml" for path, _, _ in changes)
    assert not any(path.startswith("collected_at") for path, _, _ in changes)
    assert len(changes) == 4


def test_diff_identical_and_nested_and_missing() -> None:
    a = _fake_record()
    assert environment.diff(a, copy.deepcopy(a)) == []

    b = copy.deepcopy(a)
    b["devices"]["cpus"] = []
    b["python"]["version"] = "3.12.0"
    del b["versions"]["tensorflow"]
    b.pop("packages")  # one side without packages -> not compared
    assert environment.diff(a, b) == [
        ("devices.cpus", a["devices"]["cpus"], []),
        ("python.version", "3.11.7", "3.12.0"),
        ("versions.tensorflow", "2.21.0", None),
    ]
    assert environment.diff(a, b, ignore=("collected_at", "python.version")) == [
        ("devices.cpus", a["devices"]["cpus"], []),
        ("versions.tensorflow", "2.21.0", None),
    ]


def test_diff_real_records_ignores_timestamp(record: dict[str, Any]) -> None:
    other = copy.deepcopy(record)
    other["collected_at"] = "1970-01-01T00:00:00+00:00"
    assert environment.diff(record, other) == []


def test_import_does_not_import_tensorflow() -> None:
    code = (
        "import sys, kexp.environment\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "print('ok')\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
