"""The cluster of a multi-worker run: where the workers are and which one this process is.

Three sources, the first that applies wins (``hardware.cluster.resolver: auto``):

* ``hardware.cluster.workers: [host:port, ...]`` in the YAML, with this process's index from
  ``hardware.cluster.task_index`` or the ``KEXP_TASK_INDEX`` environment variable (so every
  worker can share one config file);
* ``TF_CONFIG`` in the environment, TensorFlow's own convention;
* a Slurm job step of several tasks (``srun -n N``: ``SLURM_PROCID``,
  ``SLURM_STEP_NUM_TASKS``, ``SLURM_STEP_NODELIST``, ...), through TensorFlow's
  ``SlurmClusterResolver``. Only a job *step* counts: a batch script's own environment
  (``sbatch -n 4`` without ``srun``) says ``SLURM_NTASKS=4`` but runs one process, which
  would wait forever for three peers.

``strategy: auto`` applies the same order (:func:`several_workers`), so ``srun -n 2 kexp
train`` trains one model on two workers instead of two unrelated models that both write
their run directory as the chief.

Every source becomes a ``tf.distribute.cluster_resolver.ClusterResolver``; kexp never talks to
the other workers itself, ``MultiWorkerMirroredStrategy`` does.

Starting is bounded. Left alone, TensorFlow waits forever for a worker that never starts
(blocked in C++; the process ignored Ctrl-C and SIGTERM while waiting, with TF 2.21). :func:`bound_start`
configures the coordination service the strategy would configure anyway, plus its
registration barrier with ``hardware.cluster.start_timeout``: creating the strategy then
fails with ``DeadlineExceededError`` when not every worker has joined in time, which
:mod:`kexp.hardware.strategy` reports as a config error.

Only the chief writes the run directory. Every other worker must still run every callback and
save (saving reads variables, which under multi-worker strategies is a collective step all
workers have to take), so it writes into a private scratch directory that is removed at the
end: :func:`scratch_root` and :func:`release`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from kexp.config.schema.hardware import ClusterSection
from kexp.errors import ConfigError

TASK_INDEX_ENV = "KEXP_TASK_INDEX"
_PATH = ("hardware", "cluster")


@dataclass
class ClusterInfo:
    """A resolved cluster: its workers, this process's role, and the TF resolver for it."""

    source: str  # "workers" | "tf_config" | "slurm"
    spec: dict[str, list[str]]
    task_type: str
    task_id: int
    resolver: Any = field(default=None, repr=False)

    @property
    def num_workers(self) -> int:
        """Tasks that train (``chief`` + ``worker``), the ones that hold replicas."""
        return len(self.spec.get("chief", [])) + len(self.spec.get("worker", []))

    @property
    def is_chief(self) -> bool:
        """The chief writes the artifacts: task ``chief``, or worker 0 when there is none."""
        if self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.task_id == 0 and "chief" not in self.spec

    def record(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "cluster": self.spec,
            "task": {"type": self.task_type, "index": self.task_id},
            "chief": self.is_chief,
        }


_TF_CONFIG_SHAPE = ('{"cluster": {"worker": ["host:port", ...]}, '
                    '"task": {"type": "worker", "index": 0}}')


def _tf_config_error(message: str) -> ConfigError:
    return ConfigError.single(_PATH, f"TF_CONFIG {message}")


#: ASCII digits only: ``str.isdigit`` also takes '²', which ``int()`` then refuses.
_DIGITS = re.compile(r"[0-9]+")


def _is_address(value: Any) -> bool:
    """``host:port``, the port a number 1..65535 (``[::1]:2222`` for IPv6)."""
    if not isinstance(value, str):
        return False
    host, sep, port = value.rpartition(":")
    return bool(sep and host.strip() and " " not in host and _DIGITS.fullmatch(port)
                and 0 < int(port) < 65536)


def _task_index(raw: Any) -> int:
    """TF_CONFIG's ``task.index``: an integer >= 0 (TensorFlow also takes one as a string)."""
    if isinstance(raw, str) and _DIGITS.fullmatch(raw.strip()):
        return int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _tf_config_error(
            f"task.index must be an integer 0, 1, ..., not {json.dumps(raw)}")
    if raw < 0:
        raise _tf_config_error(f"task.index must be 0 or more, not {raw}")
    return raw


def tf_config(env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """``TF_CONFIG`` parsed, or None when unset; a malformed value is a user error.

    Checked here, where every reader gets it (``strategy: auto``, the cluster itself, resume's
    refusal, ``kexp env-report``): JSON; a ``cluster`` mapping each job to a list of
    ``host:port``; only jobs ``chief`` and ``worker``; a ``task`` whose ``type`` is one of those
    jobs and whose ``index`` is an integer in range. The value returned has ``task.index`` as
    an int.
    """
    env = os.environ if env is None else env
    raw = env.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError.single(
            _PATH, f"the TF_CONFIG environment variable is not valid JSON: {exc}"
        ) from None
    if not isinstance(value, dict):
        raise _tf_config_error(f"must be a JSON object {_TF_CONFIG_SHAPE}")
    cluster, task = value.get("cluster"), value.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        what = "cluster" if not isinstance(cluster, dict) else "task"
        missing = what not in value
        raise _tf_config_error(
            f"has {'no' if missing else 'a malformed'} {what!r} (it must be {_TF_CONFIG_SHAPE})")
    if not cluster:
        raise _tf_config_error(f"has an empty cluster (it must be {_TF_CONFIG_SHAPE})")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(_is_address(a) for a in addresses):
            raise _tf_config_error(
                f"cluster.{job} must be a list of \"host:port\" strings, not "
                f"{json.dumps(addresses)[:80]}")
    unsupported = set(cluster) - {"chief", "worker"}
    if unsupported:
        raise _tf_config_error(
            f"has job(s) {sorted(unsupported)}: multi_worker_mirrored only uses "
            "'chief' and 'worker' (parameter servers are not supported)")
    if len(cluster.get("chief", [])) > 1:
        raise _tf_config_error(
            f"has {len(cluster['chief'])} chiefs: a cluster has at most one (the others are "
            "workers)")
    task_type = task.get("type")
    if not isinstance(task_type, str) or not task_type:
        raise _tf_config_error(
            f"task.type must be 'chief' or 'worker', not {json.dumps(task_type)}" if "type" in task
            else
            "has no task.type ('chief' or 'worker')")
    if "index" not in task:
        raise _tf_config_error("has no task.index (which of the cluster's tasks is this one?)")
    index = _task_index(task["index"])
    if task_type not in cluster:
        raise _tf_config_error(
            f"task {task_type!r} #{index} is not in its cluster {sorted(cluster)}")
    count = len(cluster[task_type])
    if index >= count:
        raise _tf_config_error(
            f"task {task_type!r} #{index} is not in its cluster: task.index {index} is out of "
            f"range for {count} {task_type}(s) (0..{count - 1})" if count else
            f"task {task_type!r} #{index} is not in its cluster: it has no {task_type}")
    return {**value, "task": {**task, "index": index}}


@contextmanager
def tf_config_hidden() -> Iterator[None]:
    """``TF_CONFIG`` out of ``os.environ`` for the duration (restored after).

    ``MirroredStrategy`` parses ``TF_CONFIG`` only to log that it ignores it (eager mode), and
    fails with a JSON traceback on a malformed one; a single-machine strategy must not depend
    on it, so it is created without it.
    """
    saved = os.environ.pop("TF_CONFIG", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["TF_CONFIG"] = saved


def _slurm_tasks(env: Mapping[str, str]) -> int:
    try:
        return int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 0)
    except ValueError:
        return 0


def slurm_step(env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The Slurm job step this process is a task of (``srun``), or None outside one."""
    env = os.environ if env is None else env
    if "SLURM_PROCID" not in env or not env.get("SLURM_STEP_NUM_TASKS"):
        return None
    try:
        tasks, task = int(env["SLURM_STEP_NUM_TASKS"]), int(env["SLURM_PROCID"])
    except ValueError:
        return None
    return {"tasks": tasks, "task": task, "nodes": env.get("SLURM_STEP_NODELIST")}


def _slurm_workers(env: Mapping[str, str]) -> bool:
    step = slurm_step(env)
    return step is not None and step["tasks"] > 1


def _from_workers(section: ClusterSection, env: Mapping[str, str]) -> ClusterInfo:
    from kexp.tf import tf

    workers = list(section.workers or [])
    index: int | None = section.task_index
    raw = env.get(TASK_INDEX_ENV)
    if raw is not None and raw.strip():
        try:
            index = int(raw)
        except ValueError:
            raise ConfigError.single(
                _PATH + ("task_index",), f"{TASK_INDEX_ENV}={raw!r} is not an integer"
            ) from None
    if index is None:
        raise ConfigError.single(
            _PATH + ("task_index",),
            f"which of the {len(workers)} workers is this process? Set "
            f"hardware.cluster.task_index, or {TASK_INDEX_ENV}=0..{len(workers) - 1} in "
            "each worker's environment (0 is the chief)",
        )
    if not 0 <= index < len(workers):
        raise ConfigError.single(
            _PATH + ("task_index",),
            f"task index {index} is out of range for {len(workers)} worker(s) "
            f"(0..{len(workers) - 1})",
        )
    spec = {"worker": workers}
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(spec), task_type="worker", task_id=index, rpc_layer="grpc"
    )
    return ClusterInfo("workers", spec, "worker", index, resolver)


def _from_tf_config(env: Mapping[str, str]) -> ClusterInfo:
    from kexp.tf import tf

    value = tf_config(env)  # checked there: the task is in the cluster, its jobs supported
    assert value is not None
    task_type, task_id = value["task"]["type"], value["task"]["index"]
    spec = {job: list(addresses) for job, addresses in value["cluster"].items()}
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return ClusterInfo("tf_config", spec, task_type, task_id, resolver)


def _from_slurm(section: ClusterSection, accelerator: str) -> ClusterInfo:
    from kexp.tf import tf

    Slurm = tf.distribute.cluster_resolver.SlurmClusterResolver
    kwargs: dict[str, Any] = {"port_base": section.port}
    if accelerator == "cpu" or not shutil.which("nvidia-smi"):
        # The resolver hands out GPUs to tasks and asks nvidia-smi how many there are; on a
        # CPU-only cluster give every task a placeholder slot and let it touch nothing.
        slots = max(8, _slurm_tasks(os.environ))
        kwargs.update(gpus_per_node=slots, gpus_per_task=1, auto_set_gpu=False)
    try:
        resolver = Slurm(**kwargs)
        spec = resolver.cluster_spec().as_dict()
        task_type, task_id = resolver.get_task_info()
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ConfigError.single(
            _PATH + ("resolver",), f"cannot read the Slurm job step: {exc}"
        ) from None
    spec = {k: list(v) if isinstance(v, list) else list(v.values()) for k, v in spec.items()}
    return ClusterInfo("slurm", spec, str(task_type), int(task_id), resolver)


def resolve_cluster(
    section: ClusterSection, accelerator: str = "auto", env: Mapping[str, str] | None = None
) -> ClusterInfo | None:
    """The cluster ``section`` (and the environment) describe, or None for a single worker."""
    env = os.environ if env is None else env
    source = section.resolver
    if source == "auto":
        if section.workers is not None:
            source = "workers"
        elif tf_config(env) is not None:
            source = "tf_config"
        elif _slurm_workers(env):
            source = "slurm"
        else:
            return None
    if source == "workers":
        return _from_workers(section, env)
    if source == "tf_config":
        if tf_config(env) is None:
            raise ConfigError.single(
                _PATH + ("resolver",),
                "resolver tf_config, but the TF_CONFIG environment variable is not set",
            )
        return _from_tf_config(env)
    if "SLURM_PROCID" not in env:
        raise ConfigError.single(
            _PATH + ("resolver",),
            "resolver slurm, but this process is not a Slurm task (no SLURM_PROCID): "
            "start it with srun",
        )
    return _from_slurm(section, accelerator)


def bound_start(cluster: ClusterInfo, timeout_s: float) -> bool:
    """Make the strategy's start give up after ``timeout_s`` without all workers; returns
    whether the bound is in place.

    ``MultiWorkerMirroredStrategy`` configures TensorFlow's coordination service itself,
    with no deadline, unless one is configured already; this configures it the same way
    (standalone, the chief or worker 0 as leader, the chief and worker jobs) with a
    registration barrier that times out. TensorFlow exposes the barrier only on the
    service's config proto, so a TensorFlow without it keeps its own (unbounded) start.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    ctx = context.context()
    if ctx.coordination_service is not None:  # configured already in this process
        return False
    leader = "chief" if "chief" in cluster.spec else "worker"
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(cluster.spec[job]))
            for job in ("chief", "worker") if job in cluster.spec]
    ctx.configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{leader}/replica:0/task:0",
        coordinated_jobs=jobs,
        cluster_register_timeout_in_ms=int(timeout_s * 1000),
    )
    config = getattr(ctx, "_coordination_service_config", None)
    if config is None or "cluster_register_with_barrier" not in type(config).DESCRIPTOR.fields_by_name:
        return False
    config.cluster_register_with_barrier = True
    return True


def several_workers(section: ClusterSection, env: Mapping[str, str] | None = None) -> bool:
    """Whether the config or environment describe a cluster of more than one task.

    Used by ``strategy: auto`` without connecting to anything.
    """
    env = os.environ if env is None else env
    if section.workers is not None:
        return len(section.workers) > 1
    if section.resolver in ("auto", "tf_config"):
        value = tf_config(env)
        if value is not None:
            return sum(len(v) for k, v in value["cluster"].items() if k in ("chief", "worker")) > 1
    if section.resolver == "auto":  # the order of resolve_cluster
        return _slurm_workers(env)
    if section.resolver == "slurm":
        return _slurm_tasks(env) > 1
    return False


def is_chief(cluster: ClusterInfo | None = None) -> bool:
    """Whether this process writes the run's artifacts (always, without a cluster)."""
    return cluster is None or cluster.is_chief


def scratch_root(cluster: ClusterInfo) -> Path:
    """A private directory for a non-chief worker's copies of the artifacts."""
    return Path(tempfile.mkdtemp(prefix=f"kexp-{cluster.task_type}{cluster.task_id}-"))


def release(scratch: Path | None) -> None:
    """Remove a worker's scratch directory (never anything else)."""
    if scratch is not None and Path(scratch).name.startswith("kexp-"):
        shutil.rmtree(scratch, ignore_errors=True)


def agree_on_seed(strategy: Any, seed: int) -> int:
    """The chief's ``seed``, on every worker: they must shuffle the data the same way.

    Each worker draws a seed; a cross-worker sum in which only replica 0 (on the chief)
    contributes hands the chief's to all.
    """
    from kexp.tf import tf

    def value(context: Any) -> Any:
        mine = seed if context.replica_id_in_sync_group == 0 else 0
        return tf.constant(mine, dtype=tf.int64)

    values = strategy.experimental_distribute_values_from_function(value)
    return int(strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None).numpy())
