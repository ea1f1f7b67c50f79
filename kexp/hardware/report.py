"""What each strategy would see on this machine, for ``kexp env-report``.

Nothing here connects anywhere: the multi-worker line reads ``TF_CONFIG`` or the Slurm job
step's variables (it does not start a server) and the TPU line lists the TPUs TensorFlow already sees (it does not initialise
one). XLA and mixed precision are tried for real on a tiny computation, and the speedup
column says whether the hardware has fast 16-bit units (float16: a GPU of compute capability
7.0 or newer; bfloat16: compute capability 8.0, a TPU, or a CPU with AVX512-BF16/AMX).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from kexp.config.schema.hardware import HardwareSection
from kexp.errors import ConfigError


def _cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _compute_capabilities(tf: Any) -> list[tuple[int, int]]:
    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            cc = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        except Exception:  # details are best effort (not every build reports them)
            cc = None
        if cc:
            found.append(tuple(cc))
    return found


def _works(tf: Any, fn: Any) -> tuple[bool, str]:
    try:
        fn()
        return True, ""
    except Exception as exc:  # whatever stops it is the answer
        lines = [line for line in str(exc).splitlines() if line.strip()]
        return False, (lines[0] if lines else type(exc).__name__)[:200]


def _precision(tf: Any, tpus: list[str]) -> dict[str, Any]:
    caps = _compute_capabilities(tf)
    flags = _cpu_flags()
    out = {}
    for name, fast_gpu in (("float16", (7, 0)), ("bfloat16", (8, 0))):
        dtype = getattr(tf, name)
        runs, why = _works(tf, lambda d=dtype: tf.matmul(tf.ones((8, 8), d), tf.ones((8, 8), d)).numpy())
        fast = [f"GPU compute capability {c[0]}.{c[1]}" for c in caps if c >= fast_gpu]
        if name == "bfloat16":
            if tpus:
                fast.append("TPU")
            fast += [f"CPU {f}" for f in ("avx512_bf16", "amx_bf16") if f in flags]
        out[name] = {"runs": runs, "speedup": bool(fast), "why": ", ".join(fast) or why or
                     "no 16-bit units here: it runs, more slowly than float32"}
    return out


def _xla(tf: Any) -> dict[str, Any]:
    compiled = tf.function(lambda x: tf.reduce_sum(x * 2.0 + 1.0), jit_compile=True)
    runs, why = _works(tf, lambda: compiled(tf.ones((4,))).numpy())
    return {"usable": runs, "why": why or "compiled and ran a test function"}


def _mirrored(tf: Any, gpus: list[str], cpus: list[str]) -> dict[str, Any]:
    from kexp.hardware.cluster import tf_config_hidden

    with tf_config_hidden():  # as kexp train creates it (TF would choke on a bad TF_CONFIG)
        strategy = tf.distribute.MirroredStrategy(devices=None if gpus else cpus)
    return {"name": "mirrored", "replicas": int(strategy.num_replicas_in_sync),
            "devices": [str(d) for d in strategy.extended.worker_devices], "note": ""}


def _multi_worker(cluster: dict[str, Any] | None, slurm: dict[str, Any] | None,
                  local: list[str], cluster_error: str | None = None) -> dict[str, Any]:
    entry = {"name": "multi_worker_mirrored", "devices": local}
    if cluster_error is not None:
        return {**entry, "replicas": len(local),
                "note": "TF_CONFIG is invalid (see below): kexp train stops before training"}
    if cluster is not None:
        jobs = cluster["cluster"]
        workers = len(jobs.get("chief", [])) + len(jobs.get("worker", []))
        task = cluster.get("task", {})
        note = f"TF_CONFIG: {workers} worker(s), this is {task.get('type')} {task.get('index')}"
    elif slurm is not None and slurm["tasks"] > 1:
        workers = slurm["tasks"]
        note = f"Slurm job step: {workers} tasks, this is task {slurm['task']}"
    else:
        return {**entry, "replicas": len(local),
                "note": "no TF_CONFIG or Slurm job step: a single worker (set TF_CONFIG or "
                        "hardware.cluster, or start with srun -n N)"}
    return {**entry, "replicas": workers * len(local),
            "note": note + " (assuming every worker has these local devices)"}


def strategy_report(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The record ``kexp env-report`` prints: strategies, auto's choice, cluster, XLA, precision."""
    from kexp.hardware.cluster import slurm_step, tf_config
    from kexp.hardware.devices import Devices
    from kexp.hardware.strategy import choose
    from kexp.tf import tf

    env = os.environ if env is None else env
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    tpus = [d.name for d in tf.config.list_physical_devices("TPU")]
    first = gpus[0] if gpus else cpus[0]
    try:
        cluster = tf_config(env)
    except ConfigError as exc:  # a malformed TF_CONFIG is reported, not fatal here
        cluster = None
        cluster_error = "; ".join(issue.message.removeprefix("TF_CONFIG ")
                                  for issue in exc.issues)
    else:
        cluster_error = None
    strategies = [
        {"name": "default", "replicas": 1, "devices": [first], "note": "no distribution"},
        {"name": "one_device", "replicas": 1, "devices": [first], "note": ""},
        _mirrored(tf, gpus, cpus),
        _multi_worker(cluster, slurm_step(env), gpus or cpus[:1], cluster_error),
        {"name": "tpu", "replicas": len(tpus), "devices": tpus,
         "note": "" if tpus else "no TPU visible (set hardware.tpu to connect to one)"},
    ]
    # with a bad TF_CONFIG: what auto would pick without it (kexp train stops instead)
    auto_env = env if cluster_error is None else {k: v for k, v in env.items()
                                                   if k != "TF_CONFIG"}
    auto = choose(HardwareSection(), Devices(gpus, tpus, len(cpus)), auto_env)
    auto_replicas = next(s["replicas"] for s in strategies if s["name"] == auto)
    auto_record: dict[str, Any] = {"strategy": auto, "replicas": auto_replicas}
    if cluster_error is not None:
        auto_record["error"] = ("TF_CONFIG is invalid: kexp train with strategy auto or "
                                "multi_worker_mirrored stops with exit code 2 (this is the "
                                "choice without it)")
    return {
        "strategies": strategies,
        "auto": auto_record,
        "tf_config": cluster if cluster_error is None else {
            "error": cluster_error, "value": str(env.get("TF_CONFIG"))[:500]},
        "slurm": slurm_step(env),
        "xla": _xla(tf),
        "mixed_precision": _precision(tf, tpus),
    }


def _short(device: str) -> str:
    """``/job:localhost/replica:0/task:0/device:CPU:0`` -> ``CPU:0`` (task kept if not 0)."""
    tail = device.split("device:")[-1]
    task = device.split("task:")[-1].split("/")[0] if "/task:" in device else "0"
    return tail if task == "0" else f"task {task} {tail}"


def render_hardware(report: Mapping[str, Any], console: Any) -> None:
    """Print :func:`strategy_report` as a table and a few lines."""
    from rich.table import Table

    table = Table(title="Strategies (what each would see here)")
    table.add_column("Strategy", style="bold", no_wrap=True)
    table.add_column("Replicas", justify="right")
    table.add_column("Devices", no_wrap=True)
    table.add_column("Note")
    auto = report.get("auto") or {}
    for entry in report.get("strategies") or []:
        name = entry.get("name", "-")
        if name == auto.get("strategy"):
            name += " (auto)"
        table.add_row(name, str(entry.get("replicas", "-")),
                      "\n".join(_short(d) for d in entry.get("devices") or []) or "-",
                      entry.get("note") or "")
    console.print(table)
    cluster = report.get("tf_config")
    if isinstance(cluster, Mapping) and "error" in cluster:
        console.print(f"TF_CONFIG: invalid, {cluster['error']} (TF_CONFIG is "
                      f"{cluster.get('value')!r})", markup=False)
        if auto.get("error"):
            console.print(auto["error"], markup=False)
    else:
        console.print(f"TF_CONFIG: {cluster if cluster else 'not set'}", markup=False)
    slurm = report.get("slurm")
    if slurm:
        console.print(f"Slurm job step: {slurm['tasks']} task(s) on {slurm.get('nodes') or '-'},"
                      f" this is task {slurm['task']}", markup=False)
    xla = report.get("xla") or {}
    console.print(f"XLA (jit_compile): {'usable' if xla.get('usable') else 'not usable'}"
                  f" ({xla.get('why', '-')})", markup=False)
    for name, facts in (report.get("mixed_precision") or {}).items():
        state = "runs" if facts.get("runs") else "does not run"
        speed = "speedup expected" if facts.get("speedup") else "no speedup expected"
        console.print(f"mixed precision {name}: {state}, {speed} ({facts.get('why')})",
                      markup=False)
