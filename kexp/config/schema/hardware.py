"""The ``hardware`` section: which devices train the model and how.

    hardware:
      accelerator: auto     # auto | cpu | gpu | tpu  (gpu/tpu fail loudly when absent)
      strategy: auto        # auto | default | one_device | mirrored
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kexp.config.schema.common import Section


class HardwareSection(Section):
    """Accelerator and tf.distribute strategy."""

    accelerator: Literal["auto", "cpu", "gpu", "tpu"] = Field(
        "auto", description="auto uses what is there; gpu/tpu are errors when none is visible."
    )
    strategy: Literal["auto", "default", "one_device", "mirrored"] = Field(
        "auto",
        description="auto: mirrored for several GPUs, one_device for one, default otherwise.",
    )
    jit_compile: bool = Field(False, description="Compile the train step with XLA.")
    steps_per_execution: int = Field(1, gt=0, description="Batches per tf.function call.")
