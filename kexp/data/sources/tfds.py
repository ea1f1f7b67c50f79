"""``source: tfds``: a TensorFlow Datasets dataset, by name and split.

    train: {source: tfds, name: mnist, split: "train[:90%]"}

Needs the optional ``tensorflow-datasets`` package (``pip install 'kexp[tfds]'``); without
it, the config is refused with that instruction. Datasets are read from ``data_dir`` as TFDS
prepared them; kexp downloads only when ``download: true`` says so, so an offline run fails
at once with where TFDS looked instead of hanging on the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kexp.config.schema import TfdsSource
from kexp.data.stream import Stream
from kexp.errors import ConfigError, KeyPath

INSTALL = "pip install 'kexp[tfds]'  (or: pip install tensorflow-datasets)"


def import_tfds(at: KeyPath) -> Any:
    """The ``tensorflow_datasets`` module, or a config error saying how to install it."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ConfigError.single(
            at + ("source",),
            f"source 'tfds' needs the optional package tensorflow-datasets, which is not "
            f"installed: {INSTALL}",
        ) from None
    return tfds


def _select(features: Any, keys: Any) -> Any:
    if isinstance(keys, dict):
        return {k: features[v] for k, v in keys.items()}
    return features[keys]


def load_tfds(spec: TfdsSource, path: KeyPath, context: Any = None) -> Stream:
    """A :class:`Stream` over one split of a prepared TFDS dataset."""
    tfds = import_tfds(path)
    try:
        builder = tfds.builder(spec.name, data_dir=spec.data_dir)
    except Exception as exc:  # DatasetNotFoundError and friends
        raise ConfigError.single(path + ("name",), str(exc).splitlines()[0]) from None
    if spec.download:
        builder.download_and_prepare()
    elif not Path(builder.data_dir).is_dir() or not any(Path(builder.data_dir).iterdir()):
        raise ConfigError.single(
            path + ("name",),
            f"TFDS dataset '{spec.name}' is not prepared in {builder.data_dir}; prepare it "
            "there (tfds build, or copy the folder), or set download: true",
        )
    supervised = spec.x is None and spec.y is None
    try:
        info_split = builder.info.splits[spec.split]
    except (KeyError, ValueError) as exc:
        raise ConfigError.single(path + ("split",), str(exc).splitlines()[0]) from None
    classes = None
    label = builder.info.supervised_keys[1] if supervised and builder.info.supervised_keys else spec.y
    if isinstance(label, str) and hasattr(builder.info.features[label], "names"):
        classes = list(builder.info.features[label].names)

    def build() -> Any:
        dataset = builder.as_dataset(split=spec.split, shuffle_files=False,
                                     as_supervised=supervised)
        if supervised:
            return dataset
        if spec.y is None:
            return dataset.map(lambda f: _select(f, spec.x))
        return dataset.map(lambda f: (_select(f, spec.x), _select(f, spec.y)))

    has_labels = supervised or spec.y is not None
    return Stream(build, int(info_split.num_examples), has_labels, [str(builder.data_dir)],
                  classes if has_labels else None, at=path + ("name",),
                  finite_guard=True).checked()
