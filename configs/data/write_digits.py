"""Write the shipped digits (digits_train.npz / digits_test.npz) as image folders and TFRecords.

    python configs/data/write_digits.py                 # into configs/data/
    python configs/data/write_digits.py --out /tmp/d    # anywhere else

Makes, from the same 1,797 images and labels (and prints each folder and file it wrote, with
its number of examples):

    digits_png/{train,test}/<digit>/<index>.png     8x8 grayscale PNGs (pixel = value * 15)
    digits_tfrecord/{train,test}.tfrecord.gz        tf.train.Example records, GZIP:
        png    bytes   the same PNG
        pixels float   the 64 raw values 0..16 (shape [8, 8, 1])
        label  int64   the digit

for the ``image_dir`` and ``tfrecord`` example configs and the data pipeline benchmark. The
files are derived data (not shipped): regenerate them with this script. Values 0..16 times
15 fit a PNG byte exactly, so the images hold the same information as the npz.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


def png_bytes(images: np.ndarray) -> list[bytes]:
    """8x8x1 digits (values 0..16) as PNG bytes (values * 15), encoded by tf.data."""
    tf = _tf()
    pixels = np.round(np.asarray(images, np.float32) * 15).astype(np.uint8)
    encoded = tf.data.Dataset.from_tensor_slices(pixels).map(tf.io.encode_png).batch(4096)
    return [item for batch in encoded.as_numpy_iterator() for item in batch]


def write_png_folder(pngs: list[bytes], labels: np.ndarray, folder: Path) -> None:
    for index, (png, label) in enumerate(zip(pngs, labels)):
        target = folder / str(int(label))
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{index:04d}.png").write_bytes(png)


def write_tfrecord(images: np.ndarray, pngs: list[bytes], labels: np.ndarray, file: Path) -> None:
    tf = _tf()
    file.parent.mkdir(parents=True, exist_ok=True)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(str(file), options) as writer:
        for image, png, label in zip(images, pngs, labels):
            feature = {
                "png": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                "pixels": tf.train.Feature(
                    float_list=tf.train.FloatList(value=np.asarray(image, np.float32).ravel())),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


def write_all(out: Path, source: Path = HERE) -> list[str]:
    """Write both formats of both splits into ``out``; one line per path written, with counts."""
    wrote = []
    for part in ("train", "test"):
        with np.load(source / f"digits_{part}.npz") as data:
            images, labels = data["images"], data["labels"]
        pngs = png_bytes(images)
        folder = out / "digits_png" / part
        write_png_folder(pngs, labels, folder)
        classes = len(np.unique(labels))
        wrote.append(f"{folder}/: {len(pngs)} PNGs in {classes} class folders")
        record = out / "digits_tfrecord" / f"{part}.tfrecord.gz"
        write_tfrecord(images, pngs, labels, record)
        wrote.append(f"{record}: {len(pngs)} examples")
    return wrote


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into")
    for line in write_all(parser.parse_args().out):
        print("wrote", line)
