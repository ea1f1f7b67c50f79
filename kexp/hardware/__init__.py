"""Hardware: which devices train the model, under which tf.distribute strategy, at which
precision; and, in a cluster, which worker writes the artifacts.

One concept per module: ``devices`` (accelerator checks, GPU/CPU configuration), ``cluster``
(TF_CONFIG / YAML workers / Slurm, chief and scratch), ``strategy`` (creating the strategy),
``tpu``, ``precision`` (mixed precision), ``batch`` (global vs per-replica batch),
``keras_20585`` (the upstream multi-worker workaround), ``report`` (``kexp env-report``) and
``setup`` (all of it, in order, before the model is built).
"""

from kexp.hardware.setup import setup_hardware
from kexp.hardware.strategy import StrategyInfo, make_strategy

__all__ = ["StrategyInfo", "make_strategy", "setup_hardware"]
