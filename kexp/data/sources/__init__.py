"""Data sources: one module per ``source:`` kind.

A source reads what its spec declares into :class:`~kexp.data.arrays.Arrays` (examples in
memory or memory-mapped) or a :class:`~kexp.data.stream.Stream` (examples tf.data reads from
files). Modules are imported only when their kind is used: reading an npz never loads the
image or TFRecord code, and npz/csv never import TensorFlow.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from kexp.errors import ConfigError, KeyPath

#: ``source:`` tag -> "module:function" that reads it.
LOADERS: dict[str, str] = {
    "npz": "kexp.data.sources.npz:load_npz",
    "npy": "kexp.data.sources.npz:load_npy",
    "csv": "kexp.data.sources.csv:load_csv",
    "image_dir": "kexp.data.sources.image_dir:load_image_dir",
    "text_dir": "kexp.data.sources.text_dir:load_text_dir",
    "tfrecord": "kexp.data.sources.tfrecord:load_tfrecord",
    "keras": "kexp.data.sources.keras_datasets:load_keras_dataset",
    "tfds": "kexp.data.sources.tfds:load_tfds",
    "python": "kexp.data.sources.python:load_python",
}


@dataclass(frozen=True)
class SourceContext:
    """What reading a validation or test source takes from the training source.

    ``class_names`` keeps label ids the same across splits: a test folder of images or a
    test csv with string labels is labelled with the training split's class order.
    """

    class_names: list[str] | None = None
    #: A split read after the training split: text labels must be among its class names,
    #: and when it named none (its labels are numbers), text labels mean nothing here.
    after_training: bool = False

    def known_classes(self, at: KeyPath) -> list[str] | None:
        """The class names text labels must be among; None: draw them from these labels."""
        if self.class_names is None and self.after_training:
            raise ConfigError.single(
                at, "the labels are text, but the training split's labels are numbers (it "
                "names no classes): store the same class ids as the training data")
        return self.class_names


def load_source(spec: Any, path: KeyPath, context: SourceContext | None = None) -> Any:
    """Read the examples a source spec declares (Arrays or Stream)."""
    module, _, name = LOADERS[spec.source].partition(":")
    loader = getattr(importlib.import_module(module), name)
    return loader(spec, path, context or SourceContext())
