"""kexp: a YAML-driven experiment runner for Keras on TensorFlow.

Every CLI command is a Python function too::

    import kexp
    run = kexp.train("configs/digits_cnn.yaml")
    print(run.directory, run.test_metrics)
    kexp.evaluate(run.directory)

Importing kexp is cheap: TensorFlow is imported only when a function that needs it runs.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def train(config: Any, **kwargs: Any) -> Any:
    """Train the experiment a config declares; returns the :class:`~kexp.training.run.Run`.

    ``config`` is a YAML file's path or a mapping of the same content (relative data paths
    then start from the working directory). Keyword arguments: ``output_root`` (as
    ``--output-root``), ``out`` (a rich Console to print to), ``resume`` (a run directory).

        config = yaml.safe_load(open("my.yaml"))
        config["train"]["epochs"] = 5
        run = kexp.train(config)  # from my.yaml's folder, for its relative data paths
    """
    from kexp.training.run import train as _train

    return _train(config, **kwargs)


def resume(run_dir: Any, config: Any = None, **kwargs: Any) -> Any:
    """Continue a run in its directory from its saved training state (``kexp resume``)."""
    from kexp.training.run import train as _train

    return _train(config, resume=run_dir, **kwargs)


def reproduce(run_dir: Any, **kwargs: Any) -> Any:
    """Rerun a run's config next to it and compare (``kexp reproduce``); ``.matched``."""
    from kexp.reproduce import reproduce as _reproduce

    return _reproduce(run_dir, **kwargs)


def evaluate(target: Any, **kwargs: Any) -> Any:
    """Evaluate a run directory or saved model (``kexp evaluate``); returns the record it
    writes: ``{"model", "split", "examples", "metrics": {...}}``.

    Keyword arguments: ``data`` (a csv/npz file instead of the run's test split), ``x``/``y``
    (npz keys), ``label``/``features`` (csv columns), ``batch_size``, ``output`` (a JSON file;
    default a new ``<run>/evaluations/<time>.json``), ``overwrite``, ``out`` (a rich Console).
    """
    from kexp.evaluation import evaluate as _evaluate

    return _evaluate(target, **kwargs)


def predict(target: Any, input: Any, **kwargs: Any) -> Any:
    """Predict with a run directory or saved model on ``input`` (``kexp predict``); returns
    the output columns as a dict of arrays (e.g. ``prob_0``..., ``predicted_label``).

    Keyword arguments: ``output`` (a .csv or .npz file to write), ``x`` (npz keys),
    ``features`` (csv columns), ``batch_size``, ``overwrite``.
    """
    from kexp.prediction import predict as _predict

    return _predict(target, input, **kwargs)


def load_model(path: Any, safe_mode: bool = True) -> Any:
    """``keras.models.load_model`` in safe mode that also restores, from ``.h5``, the
    optimizer slots Keras 3's HDF5 loader drops (see :mod:`kexp.h5_optimizer`)."""
    from pathlib import Path

    from kexp.runs import load_model as _load_model

    return _load_model(Path(path), safe_mode=safe_mode)


def env_report(include_packages: bool = True) -> dict[str, Any]:
    """The environment record that every run's manifest embeds."""
    from kexp.environment import collect

    return collect(include_packages=include_packages)


__all__ = ["__version__", "env_report", "evaluate", "load_model", "predict", "reproduce",
           "resume", "train"]
