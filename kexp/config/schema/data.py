"""The ``data`` section: where the train, validation and test splits come from.

Each split is a *source* (``source: npz``, ``source: csv``, ``source: image_dir``, ...) or, for
validation and test, a fraction of the training data (``{split: 0.15}``). Paths are relative
to the config file. ``preprocessing`` declares Keras preprocessing layers that are adapted on
the training split and saved inside the model.

    data:
      train: {source: npz, path: data/digits_train.npz, x: images, y: labels}
      validation: {split: 0.15}
      test: {source: npz, path: data/digits_test.npz, x: images, y: labels}
      batch_size: 64

The reference of every source's options is ``docs/data.md``.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import AfterValidator, Discriminator, Field, Tag, model_validator

from kexp.config.schema.common import Bool, Float, INT32_MAX, Int, KerasSpec, Section

#: An array (or csv column list) for a single-input/-output model, or one per named input/output.
ArrayKeys = Union[str, dict[str, str]]


def _absolute(base: Path, value: Any) -> Any:
    """``value`` (a path, or a dict/list of paths) made absolute against ``base``."""
    if isinstance(value, dict):
        return {k: _absolute(base, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_absolute(base, v) for v in value]
    if value is None:
        return None
    path = base / Path(value).expanduser()
    try:
        return str(path.resolve())
    except RuntimeError:  # a symbolic link loop (Python < 3.13): kept, for the source to name
        return os.path.abspath(path)


def _codec(name: str) -> str:
    """An encoding Python knows (``codecs.lookup``), else a schema error at the key."""
    try:
        codecs.lookup(name)
    except LookupError:
        raise ValueError(
            "not a text encoding Python knows (codec names: utf-8, latin-1, cp1252, ...)"
        ) from None
    return name


class SourceBase(Section):
    """What every source has in common: its ``source:`` tag and which fields are paths."""

    #: Fields holding paths relative to the config file (made absolute when loading).
    path_fields: ClassVar[tuple[str, ...]] = ()

    def with_absolute_paths(self, base: Path) -> "SourceBase":
        """A copy whose path fields are absolute, relative to ``base`` (the config's folder)."""
        update = {f: _absolute(base, getattr(self, f)) for f in self.path_fields}
        return self.model_copy(update=update)


class NpzSource(SourceBase):
    """Arrays stored under keys of one ``.npz`` file (``numpy.savez``)."""

    path_fields: ClassVar[tuple[str, ...]] = ("path",)
    source: Literal["npz"]
    path: str = Field(description="The .npz file, relative to the config file.")
    x: ArrayKeys = Field("x", description="Key of the features, or {input name: key}.")
    y: Optional[ArrayKeys] = Field("y", description="Key of the labels, or {output name: key}.")
    mmap: Bool = Field(True, description="Memory-map arrays where the file allows it.")


class NpySource(SourceBase):
    """Features and labels each in their own ``.npy`` file."""

    path_fields: ClassVar[tuple[str, ...]] = ("x", "y")
    source: Literal["npy"]
    x: ArrayKeys = Field(description="The features .npy file, or {input name: file}.")
    y: Optional[ArrayKeys] = Field(None, description="The labels .npy file, or {output: file}.")
    mmap: Bool = Field(True, description="Memory-map the arrays (numpy mmap_mode='r').")


ColumnType = Literal["numeric", "string", "integer"]


class CsvSource(SourceBase):
    """A table: feature and label columns chosen by name, each of a declared type."""

    path_fields: ClassVar[tuple[str, ...]] = ("path",)
    source: Literal["csv"]
    path: str = Field(description="The .csv file, relative to the config file.")
    label: Optional[Union[str, list[str], dict[str, str]]] = Field(
        None, description="Label column, or several columns for a multi-target regression, or "
        "{output name: column} for a multi-output model."
    )
    features: Optional[Union[list[str], dict[str, list[str]]]] = Field(
        None, description="Feature columns (default: every column except the label(s)), or "
        "{input name: [columns]} for a multi-input model (one matrix per input)."
    )
    column_types: dict[str, ColumnType] = Field(
        default_factory=dict,
        description="Type of a column: numeric (default), string (categories, text) or "
        "integer (ids). Any string/integer feature makes the features a dict keyed by column.",
    )
    header: Bool = Field(True, description="The first line holds the column names.")
    column_names: Optional[list[str]] = Field(
        None, description="Column names for a file without a header row (header: false)."
    )
    delimiter: str = Field(",", min_length=1, max_length=1)
    na_values: list[str] = Field(
        default_factory=lambda: ["", "NA"], description="Cell values that mean 'missing'."
    )
    fill: dict[str, Union[Float, Int, str]] = Field(
        default_factory=dict,
        description="Value for missing cells, per column; a missing cell in any other column "
        "is an error.",
    )
    dtype: Literal["float32", "float64", "int32", "int64"] = Field(
        "float32", description="dtype of the feature matrix (all-numeric features)."
    )
    encoding: Annotated[str, AfterValidator(_codec)] = Field(
        "utf-8", description="Text encoding of the file, a Python codec name (utf-8, latin-1, "
        "cp1252, ...); a UTF-8 byte-order mark is skipped."
    )
    stream: Optional[Bool] = Field(
        None,
        description="Read with tf.data instead of loading whole; default: only files larger "
        "than an eighth of the machine's memory (at most 1 GiB).",
    )

    @model_validator(mode="after")
    def _names_when_no_header(self) -> "CsvSource":
        if not self.header and not self.column_names:
            raise ValueError("a csv without a header row (header: false) needs column_names")
        return self


class ImageDirSource(SourceBase):
    """One folder per class of images, read as ``keras.utils.image_dataset_from_directory``."""

    path_fields: ClassVar[tuple[str, ...]] = ("path",)
    source: Literal["image_dir"]
    path: str = Field(description="The folder holding one sub-folder per class.")
    image_size: tuple[
        Annotated[Int, Field(gt=0, le=INT32_MAX)], Annotated[Int, Field(gt=0, le=INT32_MAX)]
    ] = Field(
        (256, 256), description="[height, width] every image is resized to when read (each "
        "at most 2^31-1: tf.image.resize takes int32 sizes).",
    )
    color_mode: Literal["grayscale", "rgb", "rgba"] = "rgb"
    labels: Bool = Field(True, description="Labels from the sub-folder names (false: none).")
    label_mode: Literal["int", "categorical", "binary"] = "int"
    class_names: Optional[list[str]] = Field(
        None, description="Class order; default: sub-folder names in alphanumeric order."
    )
    interpolation: Literal[
        "bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic"
    ] = "bilinear"
    crop_to_aspect_ratio: Bool = False
    pad_to_aspect_ratio: Bool = False
    follow_links: Bool = False


class TextDirSource(SourceBase):
    """One folder per class of ``.txt`` files, read as ``keras.utils.text_dataset_from_directory``."""

    path_fields: ClassVar[tuple[str, ...]] = ("path",)
    source: Literal["text_dir"]
    path: str = Field(description="The folder holding one sub-folder per class.")
    labels: Bool = Field(True, description="Labels from the sub-folder names (false: none).")
    label_mode: Literal["int", "categorical", "binary"] = "int"
    class_names: Optional[list[str]] = None
    max_length: Optional[Int] = Field(None, gt=0, description="Truncate texts to this many characters.")
    follow_links: Bool = False


class TfrecordFeature(Section):
    """One feature of a ``tf.train.Example`` (``tf.io.FixedLenFeature``)."""

    dtype: Literal["float32", "int64", "string"] = "float32"
    shape: list[Annotated[Int, Field(ge=0)]] = Field(
        default_factory=list, description="Shape per example; [] for a scalar."
    )
    default: Optional[Union[Float, Int, str, list[Any]]] = Field(
        None, description="Value when a record lacks this feature (default: it is an error)."
    )
    decode: Literal["none", "image"] = Field(
        "none", description="image: the bytes are a PNG/JPEG/GIF/BMP image to decode."
    )
    channels: Int = Field(0, ge=0, le=4, description="Channels of a decoded image (0: as stored).")


class TfrecordSource(SourceBase):
    """``tf.train.Example`` records in TFRecord files, parsed with a feature spec."""

    path_fields: ClassVar[tuple[str, ...]] = ("files",)
    source: Literal["tfrecord"]
    files: Union[str, list[str]] = Field(description="A file, a glob, or a list of them.")
    compression: Literal["none", "gzip", "zlib"] = "none"
    features: dict[str, TfrecordFeature] = Field(
        min_length=1, description="Every feature to parse, by name."
    )
    x: ArrayKeys = Field(description="Feature(s) given to the model, or {input name: feature}.")
    y: Optional[ArrayKeys] = Field(None, description="Label feature, or {output name: feature}.")

    @model_validator(mode="after")
    def _keys_declared(self) -> "TfrecordSource":
        for role in ("x", "y"):
            keys = getattr(self, role)
            names = [] if keys is None else list(keys.values()) if isinstance(keys, dict) else [keys]
            missing = [n for n in names if n not in self.features]
            if missing:
                raise ValueError(
                    f"{role} names {', '.join(map(repr, missing))}, which features does not "
                    f"declare (it has: {', '.join(self.features)})"
                )
        return self


#: The loaders of ``keras.datasets`` that kexp knows the cache layout of.
KERAS_DATASETS = (
    "mnist", "fashion_mnist", "cifar10", "cifar100", "imdb", "reuters",
    "boston_housing", "california_housing",
)


class KerasDatasetSource(SourceBase):
    """A ``keras.datasets`` loader; its files come from (or go to) the user's Keras cache."""

    source: Literal["keras"]
    name: Literal[KERAS_DATASETS]  # type: ignore[valid-type]
    part: Literal["train", "test"] = Field(
        "train", description="Which half of load_data(): (x_train, y_train) or (x_test, y_test)."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of load_data (num_words, ...)."
    )
    sequence_length: Int = Field(
        200, gt=0, description="imdb/reuters: pad or truncate word-id sequences to this length."
    )


class TfdsSource(SourceBase):
    """A TensorFlow Datasets dataset (needs the optional ``tensorflow-datasets`` package)."""

    path_fields: ClassVar[tuple[str, ...]] = ("data_dir",)
    source: Literal["tfds"]
    name: str = Field(min_length=1, description="Dataset name, e.g. mnist or mnist:3.0.1.")
    split: str = Field("train", min_length=1, description="TFDS split, e.g. train or train[:80%].")
    data_dir: Optional[str] = Field(None, description="TFDS data folder (default: ~/tensorflow_datasets).")
    x: Optional[ArrayKeys] = Field(None, description="Feature key(s); default: supervised keys.")
    y: Optional[ArrayKeys] = Field(None, description="Label key(s); default: supervised keys.")
    download: Bool = Field(False, description="Download when not prepared (needs network).")


class PythonSource(SourceBase):
    """Examples returned by a function the config names (runs only because it is named)."""

    source: Literal["python"]
    function: str = Field(
        pattern=r"^[^:]+:[A-Za-z_][A-Za-z0-9_]*$",
        description="module:function or path/to/file.py:function; returns (x, y), x, a dict "
        "with x and y, or a tf.data.Dataset of unbatched examples.",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments.")

    def with_absolute_paths(self, base: Path) -> "PythonSource":
        module, _, name = self.function.rpartition(":")
        if module.endswith(".py"):
            return self.model_copy(update={"function": f"{_absolute(base, module)}:{name}"})
        return self


class SplitSpec(Section):
    """A fraction of the training source, taken out before training (seeded, recorded)."""

    split: Float = Field(gt=0.0, lt=1.0, description="Fraction of the training examples.")


#: The largest ``shuffle_buffer``: tf.data's shuffle allocates its buffer for this many
#: elements before reading any (measured: ~23 bytes a slot, 23 GB for 10^9 slots on a
#: 1,000-example dataset; 2^63-1 aborts the process with std::bad_alloc).
SHUFFLE_BUFFER_MAX = 100_000_000

#: Names of the source kinds, for "did you mean" on ``source:``.
SOURCE_KINDS = ("npz", "npy", "csv", "image_dir", "text_dir", "tfrecord", "keras", "tfds", "python")


def _source_tag(value: Any) -> Optional[str]:
    if isinstance(value, dict):
        if "split" in value and "source" not in value:
            return "split"
        return value.get("source")
    return getattr(value, "source", "split" if isinstance(value, SplitSpec) else None)


_SOURCE_ERROR = {
    "custom_error_type": "unknown_source",
    "custom_error_message": (
        f"needs 'source:' set to one of {', '.join(SOURCE_KINDS)} (or {{split: fraction}})"
    ),
}

_TAGGED = (
    Annotated[NpzSource, Tag("npz")],
    Annotated[NpySource, Tag("npy")],
    Annotated[CsvSource, Tag("csv")],
    Annotated[ImageDirSource, Tag("image_dir")],
    Annotated[TextDirSource, Tag("text_dir")],
    Annotated[TfrecordSource, Tag("tfrecord")],
    Annotated[KerasDatasetSource, Tag("keras")],
    Annotated[TfdsSource, Tag("tfds")],
    Annotated[PythonSource, Tag("python")],
)

Source = Annotated[Union[_TAGGED], Discriminator(_source_tag, **_SOURCE_ERROR)]
SourceOrSplit = Annotated[
    Union[(*_TAGGED, Annotated[SplitSpec, Tag("split")])],
    Discriminator(_source_tag, **_SOURCE_ERROR),
]


class PreprocessingSection(Section):
    """Keras preprocessing layers put in front of the model, adapted on the training split.

    ``columns`` encodes the features of a dict (csv columns, named arrays) one by one and
    concatenates them into one vector (or keeps them apart for a multi-input model);
    ``layers`` then apply to the features; ``augmentation`` layers come last and, being
    Keras augmentation layers, only act in training. All of them are saved in the model.
    """

    columns: dict[str, list[KerasSpec]] = Field(
        default_factory=dict, description="Layers per feature column, e.g. {city: [StringLookup: {output_mode: one_hot}]}."
    )
    layers: list[KerasSpec] = Field(
        default_factory=list, description="Layers applied to the (combined) features."
    )
    augmentation: list[KerasSpec] = Field(
        default_factory=list, description="Random augmentation layers (active in training only)."
    )


class DataSection(Section):
    """Splits and the tf.data pipeline options that apply to all of them."""

    train: Source
    validation: Optional[SourceOrSplit] = None
    test: Optional[SourceOrSplit] = None
    preprocessing: Optional[PreprocessingSection] = None
    batch_size: Int = Field(
        32, gt=0, le=INT32_MAX,
        description="The GLOBAL batch size, split over replicas. At most 2^31-1: a batch is "
        "held in memory whole, and with hardware.batch_per_replica the global batch (this "
        "times the replicas) must still fit TF's int64.",
    )
    shuffle: Bool = Field(True, description="Shuffle training examples each epoch (seeded).")
    shuffle_buffer: Optional[Int] = Field(
        None, gt=0, le=SHUFFLE_BUFFER_MAX,
        description="Shuffle buffer size; default: the whole training split (at most 10,000 "
        "for sources read by tf.data). At most 100,000,000: tf.data allocates about 23 bytes "
        "per slot up front whatever the data holds (2.3 GB at this limit), and a buffer as large as "
        "the training split already shuffles it fully.",
    )
    cache: Union[Bool, Literal["memory", "file"]] = Field(
        True, description="Cache a stream's decoded examples after epoch 1: true (in memory "
        "when they fit in an eighth of memory, else not at all), memory, file (in the run "
        "directory) or false.",
    )
    prefetch: Bool = Field(True, description="Prefetch batches with tf.data AUTOTUNE.")
    drop_remainder: Bool = Field(False, description="Drop the last partial batch.")
    shard_policy: Literal["auto", "data", "file", "off"] = Field(
        "auto", description="tf.data auto-shard policy under a multi-worker strategy; auto: data."
    )

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
