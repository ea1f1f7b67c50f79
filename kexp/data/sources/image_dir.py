"""``source: image_dir``: one folder per class of images, as Keras reads them.

    train: {source: image_dir, path: data/digits_png/train, image_size: [8, 8],
            color_mode: grayscale}

Listing, labelling, decoding and resizing are ``keras.utils.image_dataset_from_directory``'s
(unbatched, unshuffled: kexp's pipeline batches and shuffles with the run's seed), so a model
trained here sees images exactly as Keras' own loader gives them. Class names (sub-folder
names, or ``class_names``) are recorded in the run so ``kexp predict`` reports them.

Every file is checked to start like a PNG, JPEG, GIF or BMP before training: a file that is
not an image is a config error naming it, not a decoding error in the middle of an epoch.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from kexp.config.schema import ImageDirSource
from kexp.data.stream import Stream
from kexp.errors import ConfigError, KeyPath
from kexp.tf import keras

_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


def unreadable(files: list[str]) -> list[str]:
    """The files that do not start with the signature of an image format TF decodes."""
    bad = []
    for file in files:
        try:
            with open(file, "rb") as handle:
                start = handle.read(8)
        except OSError:
            bad.append(file)
            continue
        if not start.startswith(_SIGNATURES):
            bad.append(file)
    return bad


def image_stream(
    directory: Path, spec: ImageDirSource, at: KeyPath, *, labels: bool,
    class_names: list[str] | None,
) -> Stream:
    """A :class:`Stream` of the images under ``directory`` (labelled by sub-folder or not)."""
    if not directory.is_dir():
        raise ConfigError.single(at + ("path",), f"folder not found: {directory}")
    try:
        dataset = keras.utils.image_dataset_from_directory(
            str(directory),
            labels="inferred" if labels else None,
            label_mode=spec.label_mode if labels else None,
            class_names=class_names if labels else None,
            color_mode=spec.color_mode,
            batch_size=None,
            image_size=tuple(spec.image_size),
            shuffle=False,
            interpolation=spec.interpolation,
            follow_links=spec.follow_links,
            crop_to_aspect_ratio=spec.crop_to_aspect_ratio,
            pad_to_aspect_ratio=spec.pad_to_aspect_ratio,
            verbose=False,
        )
    except ValueError as exc:
        raise ConfigError.single(at + ("path",), f"{directory}: {exc}") from None
    files = list(dataset.file_paths)
    bad = unreadable(files)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ConfigError.single(
            at + ("path",), f"unreadable image: {bad[0]}{more} is not a PNG, JPEG, GIF or BMP file"
        )
    return Stream(
        lambda: dataset, len(files), labels, [str(directory)],
        list(dataset.class_names) if labels and dataset.class_names else None,
        names=files,
    )


def load_image_dir(spec: ImageDirSource, path: KeyPath, context: Any = None) -> Stream:
    """The images of ``spec.path``, labelled by their folder; class order from train."""
    class_names = spec.class_names or (context.class_names if context is not None else None)
    return image_stream(Path(spec.path), spec, path, labels=spec.labels, class_names=class_names)


def single_image(file: Path, spec: ImageDirSource) -> Stream:
    """One image file, read exactly as the folder it would sit in (for ``kexp predict``).

    Keras lists folders, not files, so the file is linked into a private temporary folder
    that lives as long as the returned stream.
    """
    folder = tempfile.TemporaryDirectory(prefix="kexp-image-")
    os.symlink(file.resolve(), Path(folder.name) / file.name)
    stream = image_stream(Path(folder.name), spec, ("input",), labels=False, class_names=None)
    stream.keepalive = folder  # type: ignore[attr-defined]  # removed when the stream goes
    stream.names = [str(file)]
    stream.files = [str(file)]
    return stream
