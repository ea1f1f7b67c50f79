"""The tf.data input pipeline shared by every source.

    dataset = make_dataset(arrays, batch_size=64, training=True, seed=42)

Training data is shuffled (seeded, reshuffled each epoch), batched with the global batch size,
cached and prefetched with AUTOTUNE. Evaluation data is only batched and prefetched, in order.
"""

from __future__ import annotations

from typing import Any

from kexp.data.arrays import Arrays
from kexp.tf import tf


def make_dataset(
    arrays: Arrays,
    batch_size: int,
    *,
    training: bool,
    seed: int,
    shuffle: bool = True,
    shuffle_buffer: int | None = None,
    cache: bool = True,
    prefetch: bool = True,
    drop_remainder: bool = False,
) -> Any:
    """A batched ``tf.data.Dataset`` of ``(x, y)`` (or ``x`` alone when there are no labels)."""
    elements = arrays.x if arrays.y is None else (arrays.x, arrays.y)
    dataset = tf.data.Dataset.from_tensor_slices(elements)
    if cache:
        dataset = dataset.cache()
    if training and shuffle:
        dataset = dataset.shuffle(
            shuffle_buffer or len(arrays), seed=seed, reshuffle_each_iteration=True
        )
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder and training)
    if prefetch:
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Examples live in memory, not in files: shard by data under a multi-worker strategy.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return dataset.with_options(options)


def steps(arrays: Arrays, batch_size: int, drop_remainder: bool = False) -> int:
    """Batches per epoch over ``arrays``."""
    n = len(arrays)
    return n // batch_size if drop_remainder else -(-n // batch_size)
