"""``source: image_dir``: one folder per class of images, as Keras reads them.

    train: {source: image_dir, path: data/digits_png/train, image_size: [8, 8],
            color_mode: grayscale}

Listing, labelling, decoding and resizing are ``keras.utils.image_dataset_from_directory``'s
(unbatched, unshuffled: kexp's pipeline batches and shuffles with the run's seed), so a model
trained here sees images exactly as Keras' own loader gives them. Class names (sub-folder
names, or ``class_names``) are recorded in the run so ``kexp predict`` reports them.

Every file is decoded once before training, as Keras will decode it: a file that is not an
image, or a truncated or corrupt one, is a config error naming it, not a TensorFlow error in
the middle of an epoch after the run directory exists. The check is one parallel decoding
pass over the folder, what one uncached epoch costs in decoding; measured on 2 busy CPU cores:
0.3 s for the 1,438 8x8 digit PNGs of the training folder, 2.6 s for 2,000 256x256 JPEGs of
59 KB (1.3 ms an image). Cheap next to training, but a folder of a million such images waits
about 20 minutes before the first step, on every train, resume and evaluate.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from kexp.config.schema import ImageDirSource
from kexp.data.files import require
from kexp.data.sources.folders import check_classes, check_no_empty_class
from kexp.data.stream import Stream
from kexp.errors import ConfigError, KeyPath
from kexp.tf import keras, tf

_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")

#: ``color_mode`` -> channels, as ``image_dataset_from_directory`` decodes.
_CHANNELS = {"grayscale": 1, "rgb": 3, "rgba": 4}


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


def _decode(path: Any, channels: int) -> Any:
    """Decode one image file exactly as Keras' loader does (before resizing)."""
    return tf.image.decode_image(tf.io.read_file(path), channels=channels,
                                 expand_animations=False)


def undecodable(files: list[str], channels: int) -> list[tuple[str, str]]:
    """``(file, why)`` for each file TF cannot decode as an image of ``channels`` channels.

    One parallel pass decodes every file; the ones that fail are dropped by
    ``ignore_errors`` and found by their missing index, then decoded once more, alone, for
    TensorFlow's reason.
    """
    if not files:
        return []

    def decoded(index: Any, path: Any) -> Any:
        return index + 0 * tf.cast(tf.size(_decode(path, channels)), tf.int64)

    dataset = (tf.data.Dataset.from_tensor_slices((tf.range(len(files), dtype=tf.int64), files))
               .map(decoded, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
               .ignore_errors())
    good = set(int(i) for i in dataset.as_numpy_iterator())
    bad = []
    for index in sorted(set(range(len(files))) - good):
        try:
            _decode(files[index], channels)
            why = "cannot be decoded"
        except (tf.errors.OpError, ValueError) as exc:
            why = _op_message(getattr(exc, "message", str(exc)))
        bad.append((files[index], why))
    return bad


def _op_message(text: str) -> str:
    """TensorFlow's reason alone: ``Invalid PNG data, size 60``, without the op's name."""
    text = re.sub(r"\{\{function_node [^}]*\}\}", "", text.strip().splitlines()[0])
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", text).strip() or "cannot be decoded"


def _check_images(files: list[str], shown: list[str], channels: int, at: KeyPath) -> None:
    """A config error naming the first file (as the user knows it) that is no image."""
    more = lambda n: f" (and {n - 1} more)" if n > 1 else ""  # noqa: E731
    bad = unreadable(files)
    if bad:
        first = shown[files.index(bad[0])]
        raise ConfigError.single(
            at + ("path",),
            f"unreadable image: {first}{more(len(bad))} is not a PNG, JPEG, GIF or BMP file",
        )
    broken = undecodable(files, channels)
    if broken:
        (file, why), = broken[:1]
        if channels == 1 and file.lower().endswith((".bmp", ".gif")):
            raise ConfigError.single(
                at + ("color_mode",),
                f"{shown[files.index(file)]}{more(len(broken))}: Keras' image loader decodes "
                "BMP and GIF files in color only (3 or 4 channels), so color_mode: grayscale "
                "cannot read them; use color_mode: rgb, or convert the images to PNG")
        raise ConfigError.single(
            at + ("path",),
            f"unreadable image: {shown[files.index(file)]}{more(len(broken))} cannot be "
            f"decoded ({why}); replace or remove it",
        )


def image_stream(
    directory: Path, spec: ImageDirSource, at: KeyPath, *, labels: bool,
    class_names: list[str] | None, shown: list[str] | None = None,
) -> Stream:
    """A :class:`Stream` of the images under ``directory`` (labelled by sub-folder or not).

    ``shown``: the name of each file for messages and predictions, when the user knows it
    by another path (a single file linked into a temporary folder).
    """
    require(directory, at + ("path",), "folder")
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
    names = list(shown) if shown is not None and len(shown) == len(files) else files
    _check_images(files, names, _CHANNELS[spec.color_mode], at)
    return Stream(
        lambda: dataset, len(files), labels, [str(directory)],
        list(dataset.class_names) if labels and dataset.class_names else None,
        names=names, at=at + ("path",),
    )


#: The files Keras' image loader reads (``image_dataset_from_directory``'s allowlist).
IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


def load_image_dir(spec: ImageDirSource, path: KeyPath, context: Any = None) -> Stream:
    """The images of ``spec.path``, labelled by their folder; class order from train."""
    known = context.class_names if context is not None else None
    if spec.labels and known:
        require(spec.path, path + ("path",), "folder")
        check_classes(Path(spec.path), known, spec.class_names, IMAGE_FORMATS,
                      spec.follow_links, path)
    elif spec.labels and spec.class_names is None:  # the training split names the classes
        check_no_empty_class(Path(spec.path), IMAGE_FORMATS, spec.follow_links, path)
    class_names = spec.class_names or known
    return image_stream(Path(spec.path), spec, path, labels=spec.labels, class_names=class_names)


def single_image(file: Path, spec: ImageDirSource) -> Stream:
    """One image file, read exactly as the folder it would sit in (for ``kexp predict``).

    Keras lists folders, not files, so the file is linked into a private temporary folder
    that lives as long as the returned stream.
    """
    folder = tempfile.TemporaryDirectory(prefix="kexp-image-")
    os.symlink(file.resolve(), Path(folder.name) / file.name)
    stream = image_stream(Path(folder.name), spec, ("input",), labels=False, class_names=None,
                          shown=[str(file)])
    stream.keepalive = folder  # type: ignore[attr-defined]  # removed when the stream goes
    stream.files = [str(file)]
    return stream
