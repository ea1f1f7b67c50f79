"""A csv file too large for memory, read by ``tf.data.experimental.CsvDataset``.

One pass in Python first checks every row with the same rules as the in-memory reading
(:class:`~kexp.data.sources.csv.CellReader`), counts the rows and collects string labels, so
a bad cell is a config error with its line before training rather than a TensorFlow error in
the middle of an epoch; it keeps nothing but the count and the label names. tf.data then reads
every selected column as text and converts it in a parallel map, exactly as Python did
(numbers parsed as float64, then cast), so both readings give equal values.
"""

from __future__ import annotations

from typing import Any

from kexp.data.sources.csv import CellReader, Plan, _rows_checked, label_vocabulary
from kexp.data.stream import Stream
from kexp.errors import ConfigError
from kexp.tf import tf


def _scan(plan: Plan) -> tuple[int, list[str], dict[str, bool]]:
    """Rows, string label values seen, and which numeric label columns are whole numbers."""
    reader = CellReader(plan)
    wanted = list(dict.fromkeys((*plan.features, *plan.labels)))
    where = {c: plan.index(c) for c in wanted}
    rows = 0
    labels: set[str] = set()
    whole = {c: True for c in plan.labels if plan.types[c] == "numeric"}
    with plan.file.open(newline="", encoding="utf-8") as handle:
        for line, row in _rows_checked(plan, handle):
            rows += 1
            for c in wanted:
                value = reader.value(row[where[c]], c, line)
                if plan.string_label and c == plan.labels[0]:
                    labels.add(value)
                elif whole.get(c) and value != round(value):
                    whole[c] = False
    if not rows:
        raise ConfigError.single(plan.at + ("path",), f"{plan.file.name} has no data rows")
    return rows, sorted(labels), whole


def stream_csv(plan: Plan, known: list[str] | None) -> Stream:
    """A :class:`Stream` over a validated csv file."""
    rows, seen, whole = _scan(plan)
    class_names = label_vocabulary(seen, plan, known) if plan.string_label else None
    spec = plan.spec
    wanted = list(dict.fromkeys((*plan.features, *plan.labels)))
    selected = sorted({plan.index(c) for c in wanted})  # CsvDataset wants ascending indices
    position = {c: selected.index(plan.index(c)) for c in wanted}
    na_values = tf.constant(spec.na_values or ["\0never"], dtype=tf.string)
    reader = CellReader(plan)
    fills = {c: reader.fill(c) for c in spec.fill if c in plan.types}
    vocabulary = tf.constant(class_names) if class_names else None

    def cell(cells: tuple, column: str) -> Any:
        text = tf.strings.strip(cells[position[column]])
        missing = tf.reduce_any(tf.equal(text, na_values))
        kind = plan.types[column]
        if kind == "string":
            return tf.where(missing, tf.constant(str(fills.get(column, ""))), text)
        dtype = tf.int64 if kind == "integer" else tf.float64
        safe = tf.where(missing, tf.constant("0"), text)
        value = tf.strings.to_number(safe, out_type=dtype)
        return tf.where(missing, tf.constant(fills.get(column, 0), dtype=dtype), value)

    def _typed(value: Any, kind: str) -> Any:
        return tf.cast(value, spec.dtype) if kind == "numeric" else value

    def label(cells: tuple, column: str) -> Any:  # as csv._label: whole numbers are int64
        y = cell(cells, column)
        if plan.types[column] != "numeric":
            return y
        return tf.cast(y, tf.int64 if whole[column] else tf.float32)

    def convert(*cells: Any) -> Any:
        if plan.inputs is not None:
            x = {name: tf.cast(tf.stack([cell(cells, c) for c in cols]), spec.dtype)
                 for name, cols in plan.inputs.items()}
        elif plan.dict_features:
            x = {c: tf.reshape(_typed(cell(cells, c), plan.types[c]), [1]) for c in plan.features}
        else:
            x = tf.cast(tf.stack([cell(cells, c) for c in plan.features]), spec.dtype)
        if not plan.labels:
            return x
        if plan.outputs is not None:
            y = {name: label(cells, c) for name, c in plan.outputs.items()}
        elif plan.string_label:
            text = cell(cells, plan.labels[0])
            y = tf.argmax(tf.cast(tf.equal(vocabulary, text), tf.int32), output_type=tf.int64)
        elif len(plan.labels) == 1:
            y = label(cells, plan.labels[0])
        else:
            y = tf.cast(tf.stack([cell(cells, c) for c in plan.labels]), tf.float32)
        return x, y

    def build() -> Any:
        dataset = tf.data.experimental.CsvDataset(
            str(plan.file),
            record_defaults=[tf.constant("", dtype=tf.string)] * len(selected),
            header=spec.header,
            field_delim=spec.delimiter,
            select_cols=selected,
        )
        return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return Stream(build, rows, bool(plan.labels), [str(plan.file)], class_names)

