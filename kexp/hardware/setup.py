"""Everything about hardware that must happen before the model is built, in order.

    config, info = setup_hardware(config)
    with info.strategy.scope():
        model = info.adapt_model(build_model(config))
        compile_model(model, config)

1. devices and strategy (:func:`~kexp.hardware.strategy.make_strategy`);
2. the seed: drawn when the config has none, and under multi-worker training the chief's
   seed is shared, since every worker must shuffle the data the same way;
3. TPU rules (:func:`~kexp.hardware.tpu.tpu_rules`);
4. batch semantics: ``data.batch_size`` becomes the global batch, checked against the
   replica count (:mod:`kexp.hardware.batch`);
5. the Keras dtype policy for mixed precision (:mod:`kexp.hardware.precision`).

XLA and TensorFlow's op determinism exclude each other: Keras turns ``jit_compile`` off with
only a warning when determinism is on. kexp refuses the combination instead of running a
different configuration than the one asked for.
"""

from __future__ import annotations

from kexp.config.schema import ExperimentConfig
from kexp.errors import ConfigError
from kexp.hardware.batch import global_batch
from kexp.hardware.cluster import agree_on_seed
from kexp.hardware.precision import set_policy
from kexp.hardware.strategy import StrategyInfo, make_strategy
from kexp.seeding import draw_seed


def setup_hardware(
    config: ExperimentConfig, *, connect: bool = True
) -> tuple[ExperimentConfig, StrategyInfo]:
    """The config as the run will use it (seed, global batch, TPU rules) and the strategy."""
    _check_xla(config)
    info = make_strategy(config.hardware, connect=connect)
    notes: list[str] = []
    if config.seed is None:
        seed = draw_seed()
        if info.cluster is not None and info.cluster.num_workers > 1:
            seed = agree_on_seed(info.strategy, seed)
            notes.append("seed drawn on the chief and shared with every worker")
        config = config.model_copy(update={"seed": seed})
    if info.name == "tpu" and info.connected:
        from kexp.hardware.tpu import tpu_rules

        config, tpu_notes = tpu_rules(config)
        notes.extend(tpu_notes)
    if info.connected:
        config, batch = global_batch(config, info.replicas, info.name)
        info.facts["batch"] = batch
    set_policy(config.hardware.mixed_precision)
    info.facts["mixed_precision"] = config.hardware.mixed_precision
    if notes:
        info.facts["notes"] = notes
    return config, info


def _check_xla(config: ExperimentConfig) -> None:
    if not config.hardware.jit_compile:
        return
    if config.deterministic:
        raise ConfigError.single(
            ("hardware", "jit_compile"),
            "XLA cannot run with deterministic: true (TensorFlow's op determinism does not "
            "cover XLA-compiled ops, and Keras would silently train without XLA); set one "
            "of them to false",
        )
    from tensorflow.python.framework.config import is_op_determinism_enabled

    if is_op_determinism_enabled():
        raise ConfigError.single(
            ("hardware", "jit_compile"),
            "an earlier run in this process turned TensorFlow's op determinism on (TensorFlow "
            "has no public way to turn it off), so XLA would be silently skipped; run in a "
            "fresh process",
        )
