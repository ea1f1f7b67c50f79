"""``history.csv``: one row per epoch, every epoch exactly once, never a torn row.

Keras' ``CSVLogger`` appends each row to the open file in place: a kill in the middle of a
write leaves half a row, and a resumed run that repeats an epoch appends it a second time.
kexp's default history writer, :class:`HistoryFile`, instead keeps the rows in memory and
rewrites the whole file atomically (temporary file, then rename) at the end of every epoch,
replacing any row of the same or a later epoch. The file stays small (one line per epoch),
so rewriting it costs nothing next to an epoch, and after a kill it is always the complete
file of the last finished epoch.

A config may still declare its own ``CSVLogger`` (kexp's :class:`HistoryFile` writes
``history.csv`` beside it, unless that logger writes ``history.csv`` itself);
before a resumed run continues, :func:`repair_csv` cuts that file back to the complete rows of
the epochs the restored state has finished, so each epoch is there once after the resume too.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Mapping

from kexp.tf import keras
from kexp.training.artifacts import write_text

EPOCH = "epoch"


def read_history(path: Path, separator: str = ",") -> list[dict[str, Any]]:
    """The complete rows of a history CSV, in epoch order; ``[]`` when there is no file.

    A row is complete when it has a value for every column and its epoch is an integer; a
    torn last line (from an appending writer killed mid-write) is dropped. Values are floats
    (``NA`` or empty: NaN), ``epoch`` an int (0-based, as Keras numbers epochs).
    """
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]  # an unfinished last line: the writer died while writing it
    reader = csv.reader(lines, delimiter=separator)
    header = next(reader, None)
    if not header or header[0] != EPOCH:
        return []
    rows: dict[int, dict[str, Any]] = {}
    for cells in reader:
        if len(cells) != len(header):
            continue
        try:
            epoch = int(cells[0])
        except ValueError:
            continue
        row: dict[str, Any] = {EPOCH: epoch}
        for key, cell in zip(header[1:], cells[1:]):
            row[key] = _number(cell)
        rows[epoch] = row
    return [rows[e] for e in sorted(rows)]


def _number(cell: str) -> Any:
    try:
        return float(cell)
    except ValueError:
        return math.nan if cell in ("", "NA") else cell


def render_csv(rows: list[Mapping[str, Any]], separator: str = ",") -> str:
    """Rows as CSV text: ``epoch``, then every metric name in sorted order (Keras' layout)."""
    keys = sorted({k for row in rows for k in row if k != EPOCH})
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=separator, lineterminator="\n")
    writer.writerow([EPOCH, *keys])
    for row in rows:
        writer.writerow([row[EPOCH], *(_cell(row.get(k)) for k in keys)])
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return "NA"
    if isinstance(value, float):
        return repr(value)  # every digit: the history is the record of the run
    return value


def as_columns(rows: list[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Rows to ``{metric: [value per epoch]}``, the shape of ``History.history``."""
    keys = sorted({k for row in rows for k in row if k != EPOCH})
    return {k: [float(row.get(k, math.nan)) for row in rows] for k in keys}


def repair_csv(path: Path, before_epoch: int, separator: str = ",") -> int:
    """Keep only the complete rows of epochs ``< before_epoch``; returns how many rows remain.

    Used on a resume for a user-declared (appending) ``CSVLogger`` file. Written atomically;
    nothing is written when the file is already exactly that.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    rows = [r for r in read_history(path, separator) if r[EPOCH] < before_epoch]
    text = render_csv(rows, separator) if rows else ""
    if path.read_text(encoding="utf-8", errors="replace") != text:
        write_text(path, text)
    return len(rows)


class HistoryFile(keras.callbacks.Callback):
    """Write ``history.csv`` atomically at the end of every epoch (kexp's default logger).

    Rows of earlier sessions of the same run (before a resume) are kept; a row for an epoch
    that is logged again replaces the old one and drops any later row, so after a resume
    every epoch is in the file exactly once.
    """

    def __init__(self, path: Path, separator: str = ","):
        super().__init__()
        self.path = Path(path)
        self.separator = separator
        self.rows: list[dict[str, Any]] | None = None

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.rows is None:
            self.rows = read_history(self.path, self.separator)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self.rows is None:
            self.rows = read_history(self.path, self.separator)
        row: dict[str, Any] = {EPOCH: int(epoch)}
        for key, value in (logs or {}).items():
            try:
                row[key] = float(value)
            except (TypeError, ValueError):
                continue
        self.rows = [r for r in self.rows if r[EPOCH] < epoch] + [row]
        write_text(self.path, render_csv(self.rows, self.separator))
