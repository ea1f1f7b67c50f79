"""The typed schema of a kexp config, one module per section.

It is the single source of truth: validation, defaults, ``--print-config`` and the JSON Schema
all come from :class:`ExperimentConfig`. It imports pydantic only, never TensorFlow.
"""

from __future__ import annotations

from typing import Optional, Union

from pydantic import Field

from kexp.config.schema.common import Bool, Float, Int, KerasSpec, Section, spec_parts
from kexp.config.schema.compile import CompileSection
from kexp.config.schema.data import (
    CsvSource,
    DataSection,
    ImageDirSource,
    KerasDatasetSource,
    NpySource,
    NpzSource,
    PreprocessingSection,
    PythonSource,
    SplitSpec,
    TextDirSource,
    TfdsSource,
    TfrecordSource,
)
from kexp.config.schema.freeze import FreezeSection
from kexp.config.schema.hardware import HardwareSection
from kexp.config.schema.model import InputSpec, ModelSection, SequentialModel
from kexp.config.schema.plugins import UNSAFE_DESCRIPTION, PluginList
from kexp.config.schema.training import (
    CallbackList,
    CheckpointSection,
    OutputSection,
    TrainSection,
)


class ExperimentConfig(Section):
    """One experiment: data, model, compile, training, callbacks, hardware and output."""

    # Merged away while loading (kexp.config.compose) and never dumped; declared so that
    # the JSON Schema and the reference page know the key.
    extends: Optional[Union[str, list[str]]] = Field(
        None,
        exclude=True,
        description="Base config(s) this one builds on, relative to this file, merged "
        "before validation: maps merge, lists replace (`key+:` appends).",
    )
    name: str = Field(
        min_length=1,
        max_length=100,  # a folder name: file systems allow 255 bytes
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Experiment name (at most 100 characters); runs go to "
        "<output.root>/<name>/.",
    )
    description: Optional[str] = None
    seed: Optional[Int] = Field(
        None, ge=0, lt=2**31, description="Seeds Python, numpy and TF; drawn and saved if absent."
    )
    deterministic: Bool = Field(False, description="Turn on TF op determinism.")
    data: DataSection
    model: ModelSection
    compile: CompileSection
    train: TrainSection = Field(default_factory=TrainSection)
    callbacks: CallbackList = Field(default_factory=list)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    hardware: HardwareSection = Field(default_factory=HardwareSection)
    output: OutputSection = Field(default_factory=OutputSection)
    plugins: PluginList = Field(default_factory=list)
    allow_unsafe_deserialization: Bool = Field(False, description=UNSAFE_DESCRIPTION)
    freeze: Optional[FreezeSection] = None


__all__ = [
    "CheckpointSection",
    "CompileSection",
    "CsvSource",
    "DataSection",
    "ExperimentConfig",
    "Float",
    "FreezeSection",
    "HardwareSection",
    "InputSpec",
    "Int",
    "KerasSpec",
    "ModelSection",
    "NpySource",
    "NpzSource",
    "OutputSection",
    "Section",
    "SequentialModel",
    "SplitSpec",
    "TrainSection",
    "spec_parts",
]
