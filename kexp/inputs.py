"""Data named on the command line (``--data``/``--input``), read like the run's own sources.

With a run directory, a file of the same kind as the run's training source is read with the
same keys or columns; otherwise the kind is taken from the file's suffix and the keys from
the options (``--x``/``--y`` for npz, ``--label``/``--features`` for csv).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kexp.config.schema import CsvSource, ExperimentConfig, NpzSource
from kexp.data.arrays import Arrays
from kexp.data.sources import load_source
from kexp.data.sources.csv import read_table
from kexp.errors import ConfigError, UserError


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
    if not path.is_file():
        raise UserError(f"input file not found: {path}")
    train = config.data.train if config is not None else None
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
            dropped = {chosen_label} if isinstance(chosen_label, str) else set(chosen_label or [])
            cols = [h for h in header if h not in dropped]
        return CsvSource(
            source="csv", path=str(path.resolve()), features=cols,
            label=chosen_label if labels else None, delimiter=delimiter,
        )
    raise UserError(f"{path.name}: input files must be .npz or .csv")


def read_input(
    file: str | Path, config: ExperimentConfig | None, *, labels: bool, **options: Any
) -> Arrays:
    """Features (and labels when ``labels``) from a csv/npz file given on the command line."""
    spec = source_for_file(file, config, labels=labels, **options)
    try:
        return load_source(spec, ("input",))
    except ConfigError as exc:
        # the "key path" of a command-line file is the option that named it
        raise UserError(
            "\n".join(f"{Path(file).name}: {i.message}" + (
                f"; did you mean '{i.suggestion}'?" if i.suggestion else "") for i in exc.issues)
        ) from None
