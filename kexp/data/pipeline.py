"""The tf.data input pipeline shared by every source.

    dataset = make_dataset(split, batch_size=64, training=True, seed=42)

One order for all sources: the source's unbatched examples (decoded in a parallel map by the
source, in a stable order), ``cache`` (in memory, or a file in the run directory) so decoding
happens once, ``shuffle`` (seeded, reshuffled each epoch; training only), ``batch`` with the
global batch size (Keras splits it over replicas), ``prefetch`` with AUTOTUNE. Evaluation data
is only batched and prefetched, in order. Examples already in memory (Arrays) are not cached
again: they are in memory.

``cache: true`` (the default) caches a stream in memory only when its decoded examples fit in
an eighth of the machine's memory (:mod:`kexp.data.memory`, the rule that streams a large csv),
estimated from its first examples; a larger stream is not cached and tf.data reads it from its
files every epoch. Streaming exists for data that does not fit in memory, and a memory cache
would hold all of it by the end of epoch 1. Not a file cache either: that would write a second,
decoded copy of the data (decoded images are often many times larger than their files) into the
run directory, unasked; ``cache: file`` does that on request. ``cache: memory`` caches in memory
whatever the size, with a warning when the estimate is over the share.

Under a multi-worker strategy tf.data shards the input with the chosen auto-shard policy:
``data`` (the default) is right for every source, since each worker reads everything and
keeps its share of each batch; ``file`` (each worker reads its own files) is offered for
TFRecords with many files and no fraction split. The policy used is recorded in the run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kexp.data.arrays import Arrays
from kexp.data.memory import budget, size_text
from kexp.data.stream import Stream, guard_batches
from kexp.errors import ConfigError, ConfigIssue, ConfigWarning
from kexp.tf import tf

#: Largest default shuffle buffer for streamed sources (in-memory ones shuffle whole).
STREAM_SHUFFLE_BUFFER = 10_000

_POLICIES = {
    "data": "DATA",
    "file": "FILE",
    "off": "OFF",
}


@dataclass(frozen=True)
class PipelineChoice:
    """What the pipeline of one split does, as recorded in the manifest."""

    cache: str
    shuffle_buffer: int | None
    shard_policy: str
    #: Estimated bytes of a memory cache of a stream (None for examples in memory).
    cache_estimate: int | None = None

    def record(self) -> dict[str, Any]:
        return {"cache": self.cache, "shuffle_buffer": self.shuffle_buffer,
                "shard_policy": self.shard_policy}


def choose_cache(
    examples: Any, cache: bool | str, cache_file: Path | None, memory: int | None = None,
) -> tuple[str, int | None]:
    """What caching ``examples`` means: ``memory``, ``file: <path>`` or ``none (<why>)``, and
    the estimated bytes of a memory cache (streams only; ``memory`` overrides this machine's
    memory, for tests)."""
    if isinstance(examples, Arrays):
        return ("none (examples already in memory)" if cache else "none"), None
    if cache is False:
        return "none", None
    if cache == "file" and cache_file is not None:
        return f"file: {cache_file}", None
    estimate = examples.memory_estimate()
    if cache == "memory" or estimate <= budget(memory):
        return "memory", estimate
    return (f"none (about {size_text(estimate)} decoded, more than an eighth of memory: "
            "read from the files each epoch)"), estimate


def choose(
    examples: Any, *, training: bool, shuffle: bool, shuffle_buffer: int | None,
    cache: bool | str, cache_file: Path | None, shard_policy: str,
) -> PipelineChoice:
    """Resolve the ``auto``/default options for one split."""
    in_memory = isinstance(examples, Arrays)
    cached, estimate = choose_cache(examples, cache, cache_file)
    buffer = None
    if training and shuffle:
        default = len(examples) if in_memory else min(len(examples), STREAM_SHUFFLE_BUFFER)
        buffer = shuffle_buffer or default
    policy = "data" if shard_policy == "auto" else shard_policy
    if policy == "file":
        files = getattr(examples, "source_files", 1)
        if in_memory or files < 2 or getattr(examples, "selection", None) is not None:
            raise ConfigError.single(
                ("data", "shard_policy"),
                "'file' needs a source read by tf.data from several files and no fraction "
                f"split of it (this split is {'in memory' if in_memory else f'{files} file(s)'}"
                "); use 'data' or 'auto'",
            )
    return PipelineChoice(cached, buffer, policy, estimate)


def make_dataset(
    examples: Any,
    batch_size: int,
    *,
    training: bool,
    seed: int,
    shuffle: bool = True,
    shuffle_buffer: int | None = None,
    cache: bool | str = True,
    cache_file: Path | None = None,
    prefetch: bool = True,
    drop_remainder: bool = False,
    shard_policy: str = "auto",
    passes_from: int | None = None,
) -> Any:
    """A batched ``tf.data.Dataset`` of ``(x, y)`` (or ``x`` alone when there are no labels).

    ``passes_from`` (training): instead of one pass reshuffled on every new iterator, an
    endless stream of passes over the split starting at that pass, pass ``p`` shuffled from
    ``(seed, p)`` alone. tf.data draws a reshuffled order from a generator that all iterators
    of a dataset share, and Keras makes several iterators (two per ``fit`` under a
    distribution strategy, one of them reading ahead), so the order of a given epoch would
    depend on what came before; a resumed run needs epoch N's order without training epochs
    0 to N-1 first (kexp.training.loop).
    """
    choice = choose(
        examples, training=training, shuffle=shuffle, shuffle_buffer=shuffle_buffer,
        cache=cache, cache_file=cache_file, shard_policy=shard_policy,
    )
    dataset = examples.dataset()
    if choice.cache.startswith("file"):
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        dataset = dataset.cache(str(cache_file))
    elif choice.cache == "memory":
        dataset = dataset.cache()
    drop = drop_remainder and training
    if passes_from is not None:
        dataset = _passes(dataset, passes_from, choice.shuffle_buffer, seed, batch_size, drop)
    else:
        if choice.shuffle_buffer:
            dataset = dataset.shuffle(
                choice.shuffle_buffer, seed=seed, reshuffle_each_iteration=True
            )
        dataset = dataset.batch(batch_size, drop_remainder=drop)
    if isinstance(examples, Stream) and examples.finite_guard:  # floats nothing checked yet
        dataset = guard_batches(dataset, examples.at, examples.has_labels)
    if prefetch:
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = getattr(
        tf.data.experimental.AutoShardPolicy, _POLICIES[choice.shard_policy]
    )
    options.deterministic = True
    return dataset.with_options(options)


def _passes(
    dataset: Any, first: int, buffer: int | None, seed: int, batch_size: int, drop: bool
) -> Any:
    """Passes ``first, first + 1, ...`` over ``dataset``, each shuffled from ``(seed, pass)``
    and batched on its own (a pass's last partial batch stays partial, as in one epoch)."""

    def one_pass(index: Any) -> Any:
        data = dataset
        if buffer:
            pass_seed = tf.constant(seed, tf.int64) * 1_000_003 + index
            data = data.shuffle(buffer, seed=pass_seed, reshuffle_each_iteration=False)
        return data.batch(batch_size, drop_remainder=drop)

    return tf.data.Dataset.counter(start=first).flat_map(one_pass)


def steps(examples: Any, batch_size: int, drop_remainder: bool = False) -> int:
    """Batches per epoch over ``examples``."""
    n = len(examples)
    return n // batch_size if drop_remainder else -(-n // batch_size)


def pipeline_record(splits: Any, data: Any) -> dict[str, Any]:
    """What the pipeline does for each split (cache, shuffle buffer, shard policy).

    Raises ConfigError for a choice that does not fit the data (call it before writing).
    """
    if data.drop_remainder and len(splits.train) < data.batch_size:
        raise ConfigError.single(
            ("data", "batch_size"),
            f"a batch of {data.batch_size} is more than the {len(splits.train)} training "
            "examples, and data.drop_remainder: true drops the only, partial batch: an epoch "
            "would have 0 steps. Use a batch size of at most "
            f"{len(splits.train)}, or drop_remainder: false")
    out: dict[str, Any] = {"batch_size": data.batch_size, "prefetch": "AUTOTUNE" if data.prefetch
                           else None, "drop_remainder": data.drop_remainder}
    for name in ("train", "validation", "test"):
        examples = getattr(splits, name)
        if examples is not None:
            choice = choose(
                examples, training=name == "train", shuffle=data.shuffle,
                shuffle_buffer=data.shuffle_buffer, cache=data.cache,
                cache_file=Path("cache") / name, shard_policy=data.shard_policy,
            )
            if data.cache == "memory" and (choice.cache_estimate or 0) > budget():
                warnings.warn(ConfigWarning(ConfigIssue(("data", "cache"), (
                    f"the {name} split is read as a stream and its memory cache would take "
                    f"about {size_text(choice.cache_estimate)}, more than an eighth of this "
                    f"machine's memory ({size_text(budget() * 8)}): it may run out of memory "
                    "during epoch 1. 'true' caches only what fits, 'file' caches on disk, "
                    "'false' reads the files each epoch"), severity="warning")), stacklevel=2)
            out[name] = choice.record()
    return out
