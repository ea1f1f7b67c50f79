"""``source: keras``: the ``keras.datasets`` loaders, reading the user's Keras cache.

    train: {source: keras, name: fashion_mnist, part: train}
    test:  {source: keras, name: fashion_mnist, part: test}

The loader itself is Keras' (``keras.datasets.<name>.load_data``): it uses the file cached in
``$KERAS_HOME/datasets`` (default ``~/.keras/datasets``) and downloads it otherwise, also when
the cached file fails Keras' hash check (a partial or corrupted download). Without network,
the error says which file to put where, and whether a file is there but has the wrong hash.
Arrays are
given as Keras returns them, except that the word-id sequences of imdb and reuters are padded
to ``sequence_length`` so they can be batched.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np

from kexp.config.schema import KerasDatasetSource
from kexp.data.arrays import Arrays
from kexp.errors import ConfigError, KeyPath, nearest
from kexp.tf import keras

_BASE = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_FASHION = [
    "train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
]

#: name -> (paths under <cache>/datasets that hold it, where Keras downloads it from).
CACHE_LAYOUT: dict[str, tuple[list[str], list[str]]] = {
    "mnist": (["mnist.npz"], [_BASE + "mnist.npz"]),
    "fashion_mnist": ([f"fashion-mnist/{f}" for f in _FASHION], [_BASE + f for f in _FASHION]),
    "cifar10": (["cifar-10-batches-py-target"],
                ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]),
    "cifar100": (["cifar-100-python-target"],
                 ["https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"]),
    "imdb": (["imdb.npz"], [_BASE + "imdb.npz"]),
    "reuters": (["reuters.npz"], [_BASE + "reuters.npz"]),
    "boston_housing": (["boston_housing.npz"], [_BASE + "boston_housing.npz"]),
    "california_housing": (["california_housing.npz"], [_BASE + "california_housing.npz"]),
}

#: Class names Keras documents for its image classification datasets.
CLASS_NAMES: dict[str, list[str]] = {
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                "ship", "truck"],
}

_SEQUENCES = {"imdb", "reuters"}


def cache_dir() -> Path:
    """``<Keras home>/datasets``: where ``keras.utils.get_file`` keeps dataset files."""
    try:
        from keras.src.backend import config  # Keras reads KERAS_HOME once, at import

        home = config.keras_home()
    except (ImportError, AttributeError):
        home = os.environ.get("KERAS_HOME", os.path.join("~", ".keras"))
    return Path(os.path.expanduser(home)) / "datasets"


def _check_options(load: Any, options: dict[str, Any], at: KeyPath) -> None:
    params = [p for p in inspect.signature(load).parameters.values()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    names = [p.name for p in params]
    for key in options:
        if key not in names:
            raise ConfigError.single(
                at + ("options", key),
                f"load_data takes no argument '{key}' (it takes: {', '.join(names) or 'none'})",
                suggestion=nearest(key, names),
            )


def _archive(name: str) -> str:
    """The file under the cache that Keras checks and downloads (cifar: the archive)."""
    path = CACHE_LAYOUT[name][0][0]
    return path + "_archive" if name.startswith("cifar") else path


def _present(name: str) -> list[Path]:
    """The dataset's files (as Keras downloads them) already in the cache."""
    paths = CACHE_LAYOUT[name][0]
    wanted = [_archive(name)] if name.startswith("cifar") else paths
    return [cache_dir() / p for p in wanted if (cache_dir() / p).is_file()]


def _not_cached(name: str, exc: BaseException, at: KeyPath, present: list[Path]) -> ConfigError:
    """Keras could not get the files: none cached, or a cached one failed its hash check
    (Keras downloads again only then) and the download failed."""
    paths, origins = CACHE_LAYOUT[name]
    where = cache_dir()
    wanted = "; ".join(f"{where / p} (from {o})" for p, o in zip(paths, origins * len(paths)))
    if name.startswith("cifar"):
        wanted = (f"{where / _archive(name)} (the archive {origins[0]}; Keras extracts "
                  f"it to {where / paths[0]})")
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if present:
        removed = not all(p.exists() for p in present)  # Keras deletes it when it re-downloads
        return ConfigError.single(
            at + ("name",),
            f"keras dataset '{name}': {', '.join(map(str, present))} was in the Keras cache, but "
            "its hash does not match the one Keras expects (a partial or corrupted download?); "
            + ("Keras removed it to " if removed else "Keras tried to ")
            + f"download it again, which failed ({reason}). Put a good copy at {wanted}",
        )
    return ConfigError.single(
        at + ("name",),
        f"keras dataset '{name}' is not in the Keras cache and could not be downloaded "
        f"({reason}). Put {wanted}",
    )


def load_keras_dataset(spec: KerasDatasetSource, path: KeyPath, context: Any = None) -> Arrays:
    """One half (train or test) of a ``keras.datasets`` loader's data."""
    load = getattr(keras.datasets, spec.name).load_data
    _check_options(load, spec.options, path)
    present = _present(spec.name)  # before Keras, which may remove a file it rejects
    try:
        (x_train, y_train), (x_test, y_test) = load(**spec.options)
    except (TypeError, ValueError) as exc:
        raise ConfigError.single(path + ("options",), f"load_data refused: {exc}") from None
    except Exception as exc:  # get_file raises a bare Exception on a failed download
        raise _not_cached(spec.name, exc, path, present) from None
    x, y = (x_train, y_train) if spec.part == "train" else (x_test, y_test)
    if spec.name in _SEQUENCES:
        x = keras.utils.pad_sequences(list(x), maxlen=spec.sequence_length)
    files = [str(cache_dir() / p) for p in CACHE_LAYOUT[spec.name][0]]
    files = [f for f in files if Path(f).exists()]
    names = CLASS_NAMES.get(spec.name)
    if spec.name == "cifar100" and spec.options.get("label_mode", "fine") != "fine":
        names = None
    return Arrays(np.asarray(x), np.asarray(y), files, names).check(path)
