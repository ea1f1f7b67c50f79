"""The ``data`` section: where the train, validation and test splits come from.

Each split is a *source* (``source: npz``, ``source: csv``, ...) or, for validation and test,
a fraction of the training data (``{split: 0.15}``). Paths are relative to the config file.

    data:
      train: {source: npz, path: data/digits_train.npz, x: images, y: labels}
      validation: {split: 0.15}
      test: {source: npz, path: data/digits_test.npz, x: images, y: labels}
      batch_size: 64
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Discriminator, Field, Tag, model_validator

from kexp.config.schema.common import Section

#: An array (or csv column list) for a single-input/-output model, or one per named input/output.
ArrayKeys = Union[str, dict[str, str]]


class NpzSource(Section):
    """Arrays stored under keys of one ``.npz`` file (``numpy.savez``)."""

    source: Literal["npz"]
    path: str = Field(description="The .npz file, relative to the config file.")
    x: ArrayKeys = Field("x", description="Key of the features, or {input name: key}.")
    y: Optional[ArrayKeys] = Field("y", description="Key of the labels, or {output name: key}.")
    mmap: bool = Field(True, description="Memory-map arrays where the file allows it.")


class NpySource(Section):
    """Features and labels each in their own ``.npy`` file."""

    source: Literal["npy"]
    x: ArrayKeys = Field(description="The features .npy file, or {input name: file}.")
    y: Optional[ArrayKeys] = Field(None, description="The labels .npy file, or {output: file}.")
    mmap: bool = Field(True, description="Memory-map the arrays (numpy mmap_mode='r').")


class CsvSource(Section):
    """A table with a header row: feature columns and label column(s) chosen by name."""

    source: Literal["csv"]
    path: str = Field(description="The .csv file, relative to the config file.")
    label: Optional[Union[str, list[str]]] = Field(
        None, description="Label column, or several columns for a multi-target regression."
    )
    features: Optional[list[str]] = Field(
        None, description="Feature columns; default: every column except the label(s)."
    )
    delimiter: str = Field(",", min_length=1, max_length=1)
    dtype: Literal["float32", "float64", "int32", "int64"] = Field(
        "float32", description="dtype of the feature matrix."
    )


class SplitSpec(Section):
    """A fraction of the training source, taken out before training (seeded, recorded)."""

    split: float = Field(gt=0.0, lt=1.0, description="Fraction of the training examples.")


def _source_tag(value: Any) -> Optional[str]:
    if isinstance(value, dict):
        if "split" in value and "source" not in value:
            return "split"
        return value.get("source")
    return getattr(value, "source", "split" if isinstance(value, SplitSpec) else None)


_SOURCE_ERROR = {
    "custom_error_type": "unknown_source",
    "custom_error_message": "needs 'source:' set to one of npz, npy, csv (or {split: fraction})",
}

Source = Annotated[
    Union[
        Annotated[NpzSource, Tag("npz")],
        Annotated[NpySource, Tag("npy")],
        Annotated[CsvSource, Tag("csv")],
    ],
    Discriminator(_source_tag, **_SOURCE_ERROR),
]

SourceOrSplit = Annotated[
    Union[
        Annotated[NpzSource, Tag("npz")],
        Annotated[NpySource, Tag("npy")],
        Annotated[CsvSource, Tag("csv")],
        Annotated[SplitSpec, Tag("split")],
    ],
    Discriminator(_source_tag, **_SOURCE_ERROR),
]

#: Names of the source kinds, for "did you mean" on ``source:``.
SOURCE_KINDS = ("npz", "npy", "csv")


class DataSection(Section):
    """Splits and the tf.data pipeline options that apply to all of them."""

    train: Source
    validation: Optional[SourceOrSplit] = None
    test: Optional[SourceOrSplit] = None
    batch_size: int = Field(32, gt=0, description="The GLOBAL batch size, split over replicas.")
    shuffle: bool = Field(True, description="Shuffle training examples each epoch (seeded).")
    shuffle_buffer: Optional[int] = Field(
        None, gt=0, description="Shuffle buffer size; default: the whole training split."
    )
    cache: bool = Field(True, description="Cache decoded examples in memory after epoch 1.")
    prefetch: bool = Field(True, description="Prefetch batches with tf.data AUTOTUNE.")
    drop_remainder: bool = Field(False, description="Drop the last partial batch.")

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> "DataSection":
        total = sum(
            s.split for s in (self.validation, self.test) if isinstance(s, SplitSpec)
        )
        if total >= 1.0:
            raise ValueError(
                f"validation and test fractions add up to {total:g}: nothing left to train on"
            )
        return self
