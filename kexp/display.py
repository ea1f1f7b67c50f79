"""What a person sees while kexp trains: a progress bar per epoch and tables of metrics.

Rich draws a live bar on a terminal; when output goes to a file or CI log, each epoch ends
with one plain summary line instead, so logs stay readable.
"""

from __future__ import annotations

from typing import Any, Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kexp.tf import keras

console = Console(stderr=True)


def _fmt(logs: Mapping[str, Any]) -> str:
    return "  ".join(f"{k}={float(v):.4f}" for k, v in logs.items() if _is_number(v))


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


class RichProgress(keras.callbacks.Callback):
    """Epoch and step progress with the running metrics (replaces Keras' own progress bar)."""

    def __init__(self, epochs: int, steps_per_epoch: int | None, out: Console | None = None):
        super().__init__()
        self.epochs = epochs
        self.steps = steps_per_epoch
        self.console = out or console
        self._progress: Progress | None = None
        self._task: Any = None

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if not self.console.is_terminal:
            return
        self._progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{self.epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            transient=True,
        )
        self._task = self._progress.add_task("", total=self.steps)
        self._progress.start()

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=batch + 1, description=_fmt(logs or {}))

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self.console.print(f"epoch {epoch + 1}/{self.epochs}  {_fmt(logs or {})}", highlight=False)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def metrics_table(rows: Mapping[str, Mapping[str, float]], title: str = "metrics") -> Table:
    """A table with one row per split (train / validation / test) and a column per metric."""
    names: list[str] = []
    for values in rows.values():
        names.extend(k for k in values if k not in names)
    table = Table(title=title)
    table.add_column("split")
    for name in names:
        table.add_column(name, justify="right")
    for split, values in rows.items():
        table.add_row(split, *(f"{values[n]:.4f}" if n in values else "-" for n in names))
    return table
