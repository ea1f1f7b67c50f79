"""The ``freeze`` section: train some layers frozen first, then fine-tune everything.

The classic transfer-learning recipe (Keras guide "Transfer learning & fine-tuning") as two
stages of one run:

    freeze:
      layers: [backbone_*]         # layer names (shell-style patterns) or indices
      epochs: 3                    # stage 1: these layers frozen for epochs 1-3
      fine_tune_learning_rate: 1.0e-4   # stage 2: everything trainable, recompiled

Without ``epochs`` the layers stay frozen for the whole run.
"""

from __future__ import annotations

from typing import Optional, Union

from pydantic import Field

from kexp.config.schema.common import Float, Int, Section


class FreezeSection(Section):
    """Layers that are not trained for the first ``epochs`` epochs (or at all)."""

    layers: list[Union[str, Int]] = Field(
        min_length=1,
        description="Layer names (fnmatch patterns such as backbone_*) or layer indices.",
    )
    epochs: Optional[Int] = Field(
        None,
        gt=0,
        description="Epochs trained with the layers frozen; then they are unfrozen and the "
        "model recompiled. Default: frozen for the whole run.",
    )
    fine_tune_learning_rate: Optional[Float] = Field(
        None,
        gt=0,
        description="Constant learning rate after unfreezing (default: compile.optimizer's).",
    )
