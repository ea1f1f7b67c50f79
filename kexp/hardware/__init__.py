"""Hardware: which devices train the model and under which tf.distribute strategy."""

from kexp.hardware.strategy import StrategyInfo, make_strategy

__all__ = ["StrategyInfo", "make_strategy"]
