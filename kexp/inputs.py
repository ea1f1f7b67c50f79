"""Data named on the command line (``--data``/``--input``), read like the run's own sources.

With a run directory, a file of the same kind as the run's training source is read with the
same keys or columns (and, for csv, the same column types, missing-value rules and class
names); otherwise the kind is taken from the file's suffix and the keys from the options
(``--x``/``--y`` for npz, ``--label``/``--features`` for csv). A run trained on an image or
text folder also reads a folder (one sub-folder per class when labels are needed), a run on
images a single image file, and a run on TFRecords a TFRecord file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kexp.config.schema import (
    CsvSource,
    ExperimentConfig,
    ImageDirSource,
    NpzSource,
    TextDirSource,
    TfrecordSource,
)
from kexp.data.sources import SourceContext, load_source
from kexp.data.sources.csv import read_table
from kexp.errors import ConfigError, UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp")


def source_for_file(
    file: str | Path,
    config: ExperimentConfig | None,
    *,
    labels: bool,
    x: str | None = None,
    y: str | None = None,
    label: str | None = None,
    features: list[str] | None = None,
) -> Any:
    """A source spec for ``file``: keys/columns from options, else from the run's train source."""
    path = Path(file)
    train = config.data.train if config is not None else None
    if path.is_dir():
        if isinstance(train, (ImageDirSource, TextDirSource)):
            return train.model_copy(update={"path": str(path.resolve()), "labels": labels})
        raise UserError(f"{path} is a folder: only a run trained on image_dir or text_dir "
                        "data reads folders")
    if not path.is_file():
        raise UserError(f"input file not found: {path}")
    if path.suffix.lower() in IMAGE_SUFFIXES and isinstance(train, ImageDirSource) and not labels:
        return train.model_copy(update={"path": str(path.resolve()), "labels": False})
    if isinstance(train, TfrecordSource) and path.suffix not in (".npz", ".csv"):
        return train.model_copy(update={"files": [str(path.resolve())],
                                        "y": train.y if labels else None})
    if path.suffix == ".npz":
        run = train if isinstance(train, NpzSource) else None
        return NpzSource(
            source="npz",
            path=str(path.resolve()),
            x=x or (run.x if run else "x"),
            y=(y or (run.y if run else "y")) if labels else None,
        )
    if path.suffix == ".csv":
        run_csv = train if isinstance(train, CsvSource) else None
        chosen_label = label or (run_csv.label if run_csv else None)
        if labels and chosen_label is None:
            raise UserError("say which column holds the labels: --label COLUMN")
        cols = features or (run_csv.features if run_csv else None)
        delimiter = run_csv.delimiter if run_csv else ","
        if cols is None and not labels:
            # a file for prediction may still carry the label column: leave it out
            header, _ = read_table(path, delimiter, ("input",))
            dropped = ({chosen_label} if isinstance(chosen_label, str) else set(
                chosen_label.values() if isinstance(chosen_label, dict) else chosen_label or []))
            cols = [h for h in header if h not in dropped]
        if run_csv is not None:  # same types, missing values, header as in training
            return run_csv.model_copy(update={
                "path": str(path.resolve()), "features": cols,
                "label": chosen_label if labels else None})
        return CsvSource(
            source="csv", path=str(path.resolve()), features=cols,
            label=chosen_label if labels else None, delimiter=delimiter,
        )
    raise UserError(f"{path.name}: input files must be .npz or .csv")


def read_input(
    file: str | Path, config: ExperimentConfig | None, *, labels: bool,
    class_names: list[str] | None = None, **options: Any,
) -> Any:
    """Features (and labels when ``labels``) from a file or folder given on the command line.

    Returns Arrays or a Stream; ``class_names`` (the run's) keep string labels' ids as
    in training.
    """
    spec = source_for_file(file, config, labels=labels, **options)
    if isinstance(spec, ImageDirSource) and Path(spec.path).is_file():
        from kexp.data.sources.image_dir import single_image

        try:
            return single_image(Path(spec.path), spec)
        except ConfigError as exc:
            raise UserError(f"{Path(file).name}: {exc.issues[0].message}") from None
    try:
        return load_source(spec, ("input",), SourceContext(class_names=class_names))
    except ConfigError as exc:
        # the "key path" of a command-line file is the option that named it
        raise UserError(
            "\n".join(f"{Path(file).name}: {i.message}" + (
                f"; did you mean '{i.suggestion}'?" if i.suggestion else "") for i in exc.issues)
        ) from None
