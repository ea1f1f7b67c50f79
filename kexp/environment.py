"""Environment record: which software and hardware produced a result.

A training result is only reproducible if we know what produced it: the
Python interpreter, the framework versions (TensorFlow, Keras, NumPy, ...),
how TensorFlow was built (CPU-only vs. CUDA/cuDNN), which devices it could
see, and the process settings that change numerical results without changing
any version (:func:`numerics`: ``TF_ENABLE_ONEDNN_OPTS`` and the other
``TF_*``/``OMP_*``/``KMP_*``/``MKL_*`` variables, ``CUDA_VISIBLE_DEVICES``,
``XLA_FLAGS``, ``PYTHONHASHSEED``, TensorFlow's thread pools, op determinism).
:func:`collect` gathers all of that into a plain, JSON-serialisable
``dict`` that ``kexp`` writes into every run's ``manifest.json``;
``kexp env-report`` shows it with :func:`render`, and ``kexp reproduce`` uses
:func:`diff` to explain why a re-run may not match the original.

Example::

    import json
    from rich.console import Console
    from kexp import environment

    record = environment.collect()            # imports TensorFlow lazily
    environment.render(record, Console())     # human-readable tables
    json.dumps(record)                        # safe: plain JSON types only

    old = json.load(open("runs/exp1/manifest.json"))["environment"]
    for key, was, now in environment.diff(old, record):
        print(f"{key}: {was!r} -> {now!r}")   # e.g. "versions.numpy: '1.26.4' -> '2.1.0'"

Importing this module is cheap: TensorFlow is imported only inside the
functions that need it, so CLI commands that never touch TensorFlow (and the
package-version part of the record) stay fast.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - only for type checkers
    from rich.console import Console

__all__ = ["collect", "numerics", "render", "diff", "FRAMEWORK_PACKAGES", "DEFAULT_IGNORE"]

#: Keys of ``record["versions"]`` mapped to their distribution names.  These are
#: the packages whose versions most often change numerical results.
FRAMEWORK_PACKAGES: dict[str, str] = {
    "kexp": "kexp",
    "tensorflow": "tensorflow",
    "keras": "keras",
    "numpy": "numpy",
    "h5py": "h5py",
    "pyyaml": "PyYAML",
    "typer": "typer",
    "rich": "rich",
    "pydantic": "pydantic",
}

#: Dotted key paths that :func:`diff` skips by default: they differ on every
#: run and say nothing about reproducibility.
DEFAULT_IGNORE: tuple[str, ...] = ("collected_at",)

#: Environment variables recorded by :func:`numerics`: by prefix, and by exact name.
NUMERICS_ENV_PREFIXES: tuple[str, ...] = ("TF_", "OMP_", "KMP_", "MKL_")
NUMERICS_ENV_NAMES: tuple[str, ...] = ("CUDA_VISIBLE_DEVICES", "XLA_FLAGS", "PYTHONHASHSEED")
#: ``TF_*`` names left out: TensorFlow's log verbosity (no effect on numbers; kexp sets
#: ``TF_CPP_MIN_LOG_LEVEL`` itself), and Terraform's ``TF_VAR_*``/``TF_TOKEN_*``/``TF_CLI_*``,
#: which share the prefix and may hold secrets.
_NOT_NUMERICS = re.compile(r"^TF_(CPP_(MIN_LOG_LEVEL|MAX_VLOG_LEVEL|MIN_VLOG_LEVEL|VMODULE)$"
                           r"|VAR_|TOKEN_|CLI_)")
#: A recorded variable whose name says it holds a secret is kept, its value is not.
_SECRET = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)

_GIB = 1024**3
_NVIDIA_SMI_TIMEOUT_S = 10


# --------------------------------------------------------------------------- #
# collect
# --------------------------------------------------------------------------- #
def collect(include_packages: bool = True) -> dict[str, Any]:
    """Collect the environment record for the current process.

    The result contains only JSON types (dict, list, str, int, float, bool,
    None) so that it survives a round trip through ``manifest.json`` unchanged
    and :func:`diff` of a live record against a stored one is empty when
    nothing changed.

    Args:
        include_packages: also list every installed distribution
            (``"name==version"``).  This is the most complete answer to "what
            was installed?", but it is long; callers that only need a summary
            can turn it off.

    Returns:
        A dict with keys ``python``, ``os``, ``cpu``, ``memory``,
        ``versions``, ``tensorflow_build``, ``devices``, ``numerics``,
        ``collected_at`` and (if requested) ``packages``.
        ``tensorflow_build`` is ``None`` and the device lists are empty when
        TensorFlow cannot be imported, so the record is still useful for
        diagnosing a broken install.
    """
    record: dict[str, Any] = {
        "python": _python_info(),
        "os": _os_info(),
        "cpu": _cpu_info(),
        "memory": _memory_info(),
        "versions": _framework_versions(),
    }
    tf = _import_tensorflow()
    record["tensorflow_build"] = _tensorflow_build(tf) if tf is not None else None
    record["devices"] = (
        _devices(tf) if tf is not None else {"cpus": [], "gpus": [], "tpus": []}
    )
    record["numerics"] = numerics(tf)
    if include_packages:
        record["packages"] = _installed_packages()
    record["collected_at"] = datetime.now(timezone.utc).isoformat()
    return record


def numerics(tf: Any = None) -> dict[str, Any]:
    """This process's settings that change numerical results with the same software.

    ``env``: the environment variables TensorFlow, OpenMP, MKL and oneDNN read (e.g.
    ``TF_ENABLE_ONEDNN_OPTS=0`` changes float results on CPU), by name with their values.
    ``intra_op_threads`` / ``inter_op_threads``: TensorFlow's thread pools (0: its default,
    one per core), which change the order of floating-point reductions.
    ``op_determinism``: whether TensorFlow's op determinism is on now (kexp turns it on for
    ``deterministic: true``; a run records it after seeding, so this is the run's setting).
    The last three are None when TensorFlow is not available.
    """
    env = {}
    for name in sorted(os.environ):
        if (name.startswith(NUMERICS_ENV_PREFIXES) and not _NOT_NUMERICS.match(name)) or (
            name in NUMERICS_ENV_NAMES
        ):
            env[name] = "<redacted>" if _SECRET.search(name) else os.environ[name]
    record: dict[str, Any] = {"env": env, "intra_op_threads": None, "inter_op_threads": None,
                              "op_determinism": None}
    tf = tf if tf is not None else _import_tensorflow()
    if tf is None:
        return record
    try:
        record["intra_op_threads"] = int(tf.config.threading.get_intra_op_parallelism_threads())
        record["inter_op_threads"] = int(tf.config.threading.get_inter_op_parallelism_threads())
    except Exception:
        pass
    try:  # not exported under tf.config in TF 2.21 (only enable_op_determinism is)
        from tensorflow.python.framework.config import is_op_determinism_enabled

        record["op_determinism"] = bool(is_op_determinism_enabled())
    except Exception:
        pass
    return record


def _python_info() -> dict[str, Any]:
    """Interpreter version/implementation; the executable path identifies the venv."""
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
    }


def _os_info() -> dict[str, Any]:
    """Kernel/OS details; libc and kernel can affect threading and determinism."""
    return {
        "system": platform.system(),
        "release": platform.release(),
        "version": platform.version(),
        "machine": platform.machine(),
        "platform": platform.platform(),
    }


def _cpu_info() -> dict[str, Any]:
    """CPU model and core counts.

    ``usable_cores`` (the affinity mask) is reported separately from
    ``logical_cores`` because on clusters and containers a job is often pinned
    to a subset of the machine, which changes speed and thread-pool sizes.
    """
    model: str | None = None
    if sys.platform.startswith("linux"):
        model = _read_cpuinfo_model()
    if not model:
        model = platform.processor() or None
    usable: int | None = None
    if hasattr(os, "sched_getaffinity"):
        try:
            usable = len(os.sched_getaffinity(0))
        except OSError:
            usable = None
    return {"model": model, "logical_cores": os.cpu_count(), "usable_cores": usable}


def _read_cpuinfo_model(path: str = "/proc/cpuinfo") -> str | None:
    """Return the first ``model name`` from /proc/cpuinfo (None if absent, e.g. on ARM)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "model name":
                    return value.strip() or None
    except OSError:
        return None
    return None


def _memory_info(path: str = "/proc/meminfo") -> dict[str, int | None]:
    """Total/available RAM in bytes from /proc/meminfo; None where unavailable."""
    result: dict[str, int | None] = {"total_bytes": None, "available_bytes": None}
    if not sys.platform.startswith("linux"):
        return result
    wanted = {"MemTotal": "total_bytes", "MemAvailable": "available_bytes"}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() in wanted:
                    parts = value.split()
                    if parts and parts[0].isdigit():
                        factor = 1024 if len(parts) > 1 and parts[1].lower() == "kb" else 1
                        result[wanted[key.strip()]] = int(parts[0]) * factor
    except OSError:
        pass
    return result


def _dist_version(dist_name: str) -> str | None:
    """Installed version of a distribution, or None if it is not installed."""
    try:
        return importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _framework_versions() -> dict[str, str | None]:
    """Versions of the key packages, read from metadata so TensorFlow is not imported.

    ``kexp`` itself may be used from a source checkout without being installed;
    then its ``__version__`` attribute is used instead of the (absent) metadata.
    """
    versions = {key: _dist_version(dist) for key, dist in FRAMEWORK_PACKAGES.items()}
    if versions["kexp"] is None:
        kexp_module = sys.modules.get("kexp")
        version = getattr(kexp_module, "__version__", None)
        versions["kexp"] = str(version) if version is not None else None
    return versions


def _installed_packages() -> list[str]:
    """Sorted ``name==version`` for every installed distribution.

    Names are normalised (PEP 503: lower case, runs of ``-_.`` -> ``-``) so that
    the same package compares equal across pip versions and platforms; when a
    distribution is installed twice, the first one on ``sys.path`` (the one
    Python would actually import) wins.
    """
    seen: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name, version = _name_and_version(dist)
        if not name:
            continue  # broken/partial install without metadata
        seen.setdefault(_normalize_name(name), version or "")
    return sorted(f"{name}=={version}" for name, version in seen.items())


def _name_and_version(dist: importlib.metadata.Distribution) -> tuple[str | None, str | None]:
    """``Name`` and ``Version`` of one distribution, from the header of its metadata.

    What ``dist.metadata["Name"]`` and ``dist.version`` answer (the first of each header,
    names case-insensitive, the same files in the same order), without parsing the whole
    file as an e-mail message: the header ends at the first empty line, while the body (the
    project's long description) can be most of the file. Parsing every file whole was
    most of the environment record's cost, paid by every run.
    """
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or dist.read_text("")
    found: dict[str, str] = {}
    for line in (text or "").splitlines():
        if not line.strip():
            break  # the end of the header
        key, sep, value = line.partition(":")
        key = key.lower()
        if sep and key in ("name", "version") and key not in found and line[:1] not in " \t":
            found[key] = value.lstrip(" \t")  # (as the e-mail parser keeps it)
    return found.get("name") or None, found.get("version")


def _normalize_name(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _import_tensorflow() -> Any | None:
    """Import TensorFlow on demand; None if it is missing or broken."""
    try:
        from kexp.tf import tf  # noqa: PLC0415 - deliberately lazy; quiets TF's start-up logs
    except Exception:  # ImportError, or a broken install raising anything else
        return None
    return tf


def _tensorflow_build(tf: Any) -> dict[str, Any]:
    """How the installed TensorFlow wheel was built (not what hardware is present).

    A CUDA build still runs on a machine without GPUs, so this is reported
    separately from :func:`_devices`; together they explain e.g. "CUDA build,
    but no GPU visible".
    """
    try:
        info = dict(tf.sysconfig.get_build_info())
    except Exception:
        info = {}
    cuda_build = bool(info.get("is_cuda_build", False))
    rocm_build = bool(info.get("is_rocm_build", False))
    cuda_version = _str_or_none(info.get("cuda_version"))
    cudnn_version = _str_or_none(info.get("cudnn_version"))
    if cuda_build:
        description = f"CUDA {cuda_version or '?'} / cuDNN {cudnn_version or '?'} build"
    elif rocm_build:
        description = f"ROCm {_str_or_none(info.get('rocm_version')) or '?'} build"
    else:
        description = "CPU build"
    try:
        built_with_cuda: bool | None = bool(tf.test.is_built_with_cuda())
    except Exception:
        built_with_cuda = None
    return {
        "cuda_build": cuda_build,
        "rocm_build": rocm_build,
        "cuda_version": cuda_version,
        "cudnn_version": cudnn_version,
        "description": description,
        "is_built_with_cuda": built_with_cuda,
    }


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _list_devices(tf: Any, device_type: str) -> list[Any]:
    """Physical devices of one type; never raises (TPU probing in particular can fail)."""
    try:
        return list(tf.config.list_physical_devices(device_type))
    except Exception:
        return []


def _devices(tf: Any) -> dict[str, list[dict[str, Any]]]:
    """Devices TensorFlow can see, with GPU model, compute capability and memory."""
    cpus = [_basic_device(d) for d in _list_devices(tf, "CPU")]
    tpus = [_basic_device(d) for d in _list_devices(tf, "TPU")]
    gpu_devices = _list_devices(tf, "GPU")
    smi = _nvidia_smi_gpus() if gpu_devices else None
    gpus: list[dict[str, Any]] = []
    for index, device in enumerate(gpu_devices):
        entry = _basic_device(device)
        details = _gpu_details(tf, device)
        entry["details"] = details
        entry["memory_total_bytes"] = _match_gpu_memory(index, details.get("device_name"), smi)
        gpus.append(entry)
    return {"cpus": cpus, "gpus": gpus, "tpus": tpus}


def _basic_device(device: Any) -> dict[str, Any]:
    return {
        "name": str(getattr(device, "name", device)),
        "device_type": str(getattr(device, "device_type", "")),
    }


def _gpu_details(tf: Any, device: Any) -> dict[str, Any]:
    """GPU model name and compute capability (as "major.minor", a JSON-stable string)."""
    try:
        raw = dict(tf.config.experimental.get_device_details(device))
    except Exception:
        raw = {}
    capability = raw.get("compute_capability")
    if isinstance(capability, (tuple, list)):
        capability = ".".join(str(part) for part in capability)
    return {
        "device_name": _str_or_none(raw.get("device_name")),
        "compute_capability": _str_or_none(capability),
    }


def _nvidia_smi_gpus() -> list[dict[str, Any]] | None:
    """Per-GPU name and total memory from ``nvidia-smi``; None if unavailable.

    TensorFlow does not report total device memory without allocating on the
    device, so we ask the driver instead.
    """
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        proc = subprocess.run(
            [binary, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=_NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return _parse_nvidia_smi(proc.stdout)


def _parse_nvidia_smi(output: str) -> list[dict[str, Any]]:
    """Parse ``name, memory_MiB`` CSV lines into ``{name, memory_total_bytes}``."""
    gpus: list[dict[str, Any]] = []
    for line in output.splitlines():
        if not line.strip():
            continue
        name, _, memory = line.rpartition(",")
        try:
            memory_bytes: int | None = int(float(memory.strip()) * 1024 * 1024)
        except ValueError:
            memory_bytes = None
        gpus.append({"name": name.strip() or None, "memory_total_bytes": memory_bytes})
    return gpus


def _match_gpu_memory(
    index: int, device_name: str | None, smi: list[dict[str, Any]] | None
) -> int | None:
    """Total memory for TensorFlow's ``index``-th GPU.

    nvidia-smi lists all GPUs in PCI order, while TensorFlow's numbering follows
    ``CUDA_VISIBLE_DEVICES``/``CUDA_DEVICE_ORDER``, so positions need not agree.
    We therefore match by model name when all GPUs of that model report the
    same memory, and only fall back to position otherwise.
    """
    if not smi:
        return None
    if device_name:
        same_model = {g["memory_total_bytes"] for g in smi if g["name"] == device_name}
        if len(same_model) == 1:
            return same_model.pop()
    if index < len(smi):
        return smi[index]["memory_total_bytes"]
    return None


# --------------------------------------------------------------------------- #
# render
# --------------------------------------------------------------------------- #
def render(record: Mapping[str, Any], console: Console) -> None:
    """Print ``record`` as rich tables (System, Frameworks, TensorFlow build, Devices).

    Works on partial or older records (e.g. loaded from a manifest written by
    an earlier kexp) by showing missing values as "-" instead of failing.  The
    full package list is summarised as a count; it lives in manifest.json.
    """
    from rich.table import Table  # noqa: PLC0415 - keep module import light

    python = record.get("python") or {}
    os_info = record.get("os") or {}
    cpu = record.get("cpu") or {}
    memory = record.get("memory") or {}

    system = Table(title="System", show_header=False)
    system.add_column("Field", style="bold")
    system.add_column("Value")
    system.add_row(
        "Python",
        f"{_fmt(python.get('version'))} ({_fmt(python.get('implementation'))})",
    )
    system.add_row("Executable", _fmt(python.get("executable")))
    system.add_row("OS", _fmt(os_info.get("platform") or os_info.get("system")))
    system.add_row("Machine", _fmt(os_info.get("machine")))
    system.add_row("CPU", _fmt(cpu.get("model")))
    system.add_row(
        "Cores",
        f"{_fmt(cpu.get('logical_cores'))} logical, {_fmt(cpu.get('usable_cores'))} usable",
    )
    system.add_row(
        "Memory",
        f"{_fmt_gib(memory.get('total_bytes'))} total, "
        f"{_fmt_gib(memory.get('available_bytes'))} available",
    )
    console.print(system)

    frameworks = Table(title="Frameworks")
    frameworks.add_column("Package", style="bold")
    frameworks.add_column("Version")
    for name, version in (record.get("versions") or {}).items():
        frameworks.add_row(_display_name(name), version if version else "not installed")
    console.print(frameworks)

    build = record.get("tensorflow_build")
    gpu_count = len((record.get("devices") or {}).get("gpus") or [])
    build_table = Table(title="TensorFlow build", show_header=False)
    build_table.add_column("Field", style="bold")
    build_table.add_column("Value")
    if build:
        build_table.add_row("Build", _fmt(build.get("description")))
        build_table.add_row("CUDA build", _fmt(build.get("cuda_build")))
        build_table.add_row("ROCm build", _fmt(build.get("rocm_build")))
        build_table.add_row("CUDA version", _fmt(build.get("cuda_version")))
        build_table.add_row("cuDNN version", _fmt(build.get("cudnn_version")))
        # A GPU build on a machine without visible GPUs silently runs on CPU.
        build_table.add_row("GPUs visible", str(gpu_count))
    else:
        build_table.add_row("Build", "TensorFlow not available")
    console.print(build_table)

    devices = record.get("devices") or {}
    device_table = Table(title="Devices")
    device_table.add_column("Type", style="bold")
    device_table.add_column("Name")
    device_table.add_column("Model")
    device_table.add_column("Compute cap.")
    device_table.add_column("Memory")
    rows = 0
    for group in ("cpus", "gpus", "tpus"):
        for device in devices.get(group) or []:
            details = device.get("details") or {}
            device_table.add_row(
                _fmt(device.get("device_type")),
                _fmt(device.get("name")),
                _fmt(details.get("device_name")),
                _fmt(details.get("compute_capability")),
                _fmt_gib(device.get("memory_total_bytes")),
            )
            rows += 1
    if rows == 0:
        device_table.add_row("-", "no devices reported", "-", "-", "-")
    console.print(device_table)

    numbers = record.get("numerics")
    settings = Table(title="Settings that change numerics", show_header=False)
    settings.add_column("Setting", style="bold")
    settings.add_column("Value", overflow="fold")
    if numbers:
        for name, value in (numbers.get("env") or {}).items():
            settings.add_row(name, _fmt(value))
        if not numbers.get("env"):
            settings.add_row("environment", "no TF_*, OMP_*, KMP_*, MKL_*, CUDA_VISIBLE_DEVICES, "
                             "XLA_FLAGS or PYTHONHASHSEED set")
        for key, label in (("intra_op_threads", "TF intra-op threads"),
                           ("inter_op_threads", "TF inter-op threads")):
            value = numbers.get(key)
            settings.add_row(label, f"{value} (TensorFlow's default)" if value == 0 else _fmt(value))
        determinism = numbers.get("op_determinism")
        settings.add_row("TF op determinism (this process)", _fmt(
            None if determinism is None else ("on" if determinism else "off")))
    else:
        settings.add_row("Settings", "not recorded")
    console.print(settings)

    if record.get("hardware"):  # added by `kexp env-report`: what each strategy would see
        from kexp.hardware.report import render_hardware  # noqa: PLC0415 - imports TF

        render_hardware(record["hardware"], console)

    packages = record.get("packages")
    if packages is None:
        console.print("Installed packages: not recorded")
    else:
        console.print(f"Installed packages: {len(packages)} (full list in the record)")
    if record.get("collected_at"):
        console.print(f"Collected at: {record['collected_at']}")


_DISPLAY_NAMES = {
    "tensorflow": "TensorFlow",
    "keras": "Keras",
    "numpy": "NumPy",
    "pyyaml": "PyYAML",
    "pydantic": "Pydantic",
    "typer": "Typer",
    "rich": "Rich",
}


def _display_name(key: str) -> str:
    return _DISPLAY_NAMES.get(key, key)


def _fmt(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _fmt_gib(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    return f"{value / _GIB:.1f} GiB"


# --------------------------------------------------------------------------- #
# diff
# --------------------------------------------------------------------------- #
def diff(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    *,
    ignore: Iterable[str] = DEFAULT_IGNORE,
) -> list[tuple[str, Any, Any]]:
    """List what differs between two environment records, as ``(path, a, b)``.

    Used by ``kexp reproduce`` to explain why a re-run may not match: nested
    dicts are compared key by key (``"versions.numpy"``), other values (e.g.
    device lists) as a whole.  ``packages`` is compared per package
    (``"packages.numpy"``, with ``None`` on the side where it is missing), and
    only when both records include a package list.  A key missing on one side
    is reported with ``None`` for that side.

    Args:
        a: the reference record (e.g. from the original run's manifest).
        b: the record to compare (e.g. the current environment).
        ignore: dotted paths to skip; by default only ``collected_at``.

    Returns:
        Differences sorted by path.
    """
    skip = frozenset(ignore)
    out: list[tuple[str, Any, Any]] = []
    for key in sorted(set(a) | set(b)):
        if key in skip:
            continue
        if key == "packages":
            if isinstance(a.get(key), list) and isinstance(b.get(key), list):
                out.extend(_diff_packages(a[key], b[key], skip))
            continue
        _diff_value(key, a.get(key), b.get(key), skip, out)
    return sorted(out, key=lambda item: item[0])


def _diff_value(
    path: str, x: Any, y: Any, skip: frozenset[str], out: list[tuple[str, Any, Any]]
) -> None:
    if path in skip:
        return
    if isinstance(x, Mapping) and isinstance(y, Mapping):
        for key in sorted(set(x) | set(y), key=str):
            _diff_value(f"{path}.{key}", x.get(key), y.get(key), skip, out)
    elif x != y:
        out.append((path, x, y))


def _parse_packages(packages: Iterable[str]) -> dict[str, str]:
    """``["NumPy==1.0", ...]`` -> ``{"numpy": "1.0"}`` (names normalised)."""
    parsed: dict[str, str] = {}
    for spec in packages:
        name, _, version = str(spec).partition("==")
        parsed.setdefault(_normalize_name(name.strip()), version.strip())
    return parsed


def _diff_packages(
    a: Iterable[str], b: Iterable[str], skip: frozenset[str]
) -> list[tuple[str, str | None, str | None]]:
    old, new = _parse_packages(a), _parse_packages(b)
    out: list[tuple[str, str | None, str | None]] = []
    for name in sorted(set(old) | set(new)):
        path = f"packages.{name}"
        if path not in skip and old.get(name) != new.get(name):
            out.append((path, old.get(name), new.get(name)))
    return out
