"""``source: text_dir``: one folder per class of ``.txt`` files, as Keras reads them.

    train: {source: text_dir, path: data/reviews/train}
    preprocessing: {layers: [TextVectorization: {max_tokens: 5000, output_sequence_length: 100}]}

Listing and labelling are ``keras.utils.text_dataset_from_directory``'s (unbatched and
unshuffled; kexp's pipeline does both, seeded). Each example is one string; a
``TextVectorization`` in ``data.preprocessing`` (adapted on the training split, saved in the
model) turns it into token ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kexp.config.schema import TextDirSource
from kexp.data.stream import Stream, count
from kexp.errors import ConfigError, KeyPath
from kexp.tf import keras


def text_stream(
    directory: Path, spec: TextDirSource, at: KeyPath, *, labels: bool,
    class_names: list[str] | None,
) -> Stream:
    """A :class:`Stream` of the texts under ``directory`` (labelled by sub-folder or not)."""
    if not directory.is_dir():
        raise ConfigError.single(at + ("path",), f"folder not found: {directory}")
    try:
        dataset = keras.utils.text_dataset_from_directory(
            str(directory),
            labels="inferred" if labels else None,
            label_mode=spec.label_mode if labels else None,
            class_names=class_names if labels else None,
            batch_size=None,
            max_length=spec.max_length,
            shuffle=False,
            follow_links=spec.follow_links,
            verbose=False,
        )
    except ValueError as exc:
        raise ConfigError.single(at + ("path",), f"{directory}: {exc}") from None
    class_names = getattr(dataset, "class_names", None)
    return Stream(
        lambda: dataset, count(dataset), labels, [str(directory)],
        list(class_names) if labels and class_names else None,
    )


def load_text_dir(spec: TextDirSource, path: KeyPath, context: Any = None) -> Stream:
    """The texts of ``spec.path``, labelled by their folder; class order from train."""
    class_names = spec.class_names or (context.class_names if context is not None else None)
    return text_stream(Path(spec.path), spec, path, labels=spec.labels, class_names=class_names)
