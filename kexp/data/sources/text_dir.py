"""``source: text_dir``: one folder per class of ``.txt`` files, as Keras reads them.

    train: {source: text_dir, path: data/reviews/train}
    preprocessing: {layers: [TextVectorization: {max_tokens: 5000, output_sequence_length: 100}]}

Listing and labelling are ``keras.utils.text_dataset_from_directory``'s (unbatched and
unshuffled; kexp's pipeline does both, seeded). Each example is one string; a
``TextVectorization`` in ``data.preprocessing`` (adapted on the training split, saved in the
model) turns it into token ids. Each example's file is known (``Stream.names``), so
``kexp predict`` on a folder of texts says which file each prediction is for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kexp.config.schema import TextDirSource
from kexp.data.files import require
from kexp.data.sources.folders import check_classes, check_no_empty_class
from kexp.data.stream import Stream, count
from kexp.errors import ConfigError, KeyPath
from kexp.tf import keras


def text_stream(
    directory: Path, spec: TextDirSource, at: KeyPath, *, labels: bool,
    class_names: list[str] | None,
) -> Stream:
    """A :class:`Stream` of the texts under ``directory`` (labelled by sub-folder or not)."""
    require(directory, at + ("path",), "folder")
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
    length = count(dataset)
    files = _listing(directory, spec, labels=labels, class_names=class_names)
    return Stream(
        lambda: dataset, length, labels, [str(directory)],
        list(class_names) if labels and class_names else None,
        names=files if files is not None and len(files) == length else None,
        at=at + ("path",),
    )


def _listing(directory: Path, spec: TextDirSource, *, labels: bool,
             class_names: list[str] | None) -> list[str] | None:
    """The file of each text, in the dataset's order: Keras' own listing with the arguments
    ``text_dataset_from_directory`` passes it (unlike the image loader, the text loader does
    not expose ``file_paths``). None if that internal function is not there."""
    try:
        from keras.src.utils.dataset_utils import index_directory

        files, _, _ = index_directory(
            str(directory), "inferred" if labels else None, formats=(".txt",),
            class_names=class_names if labels else None, shuffle=False,
            follow_links=spec.follow_links, verbose=False,
        )
    except (ImportError, TypeError, ValueError):
        return None
    return [str(f) for f in files]


def load_text_dir(spec: TextDirSource, path: KeyPath, context: Any = None) -> Stream:
    """The texts of ``spec.path``, labelled by their folder; class order from train."""
    known = context.class_names if context is not None else None
    if spec.labels and known:
        require(spec.path, path + ("path",), "folder")
        check_classes(Path(spec.path), known, spec.class_names, (".txt",), spec.follow_links, path)
    elif spec.labels and spec.class_names is None:  # the training split names the classes
        check_no_empty_class(Path(spec.path), (".txt",), spec.follow_links, path)
    class_names = spec.class_names or known
    return text_stream(Path(spec.path), spec, path, labels=spec.labels, class_names=class_names)
