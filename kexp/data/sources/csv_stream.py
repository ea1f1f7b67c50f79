"""A csv file too large for memory, read by ``tf.data.experimental.CsvDataset``.

One pass in Python first checks every row with the same rules as the in-memory reading
(:class:`~kexp.data.sources.csv.CellReader`), counts the rows and collects string labels, so
a bad cell is a config error with its line before training rather than a TensorFlow error in
the middle of an epoch; it keeps nothing but the count and the label names. tf.data then reads
every selected column as text and converts it in a parallel map, exactly as Python did
(numbers parsed as float64, then cast), so both readings give equal values.

``CsvDataset`` fails on an empty line, which Python's csv reader skips (a file ending in a
blank line is common). When the scan finds one, the file is read line by line instead
(``TextLineDataset``, empty lines dropped, ``tf.io.decode_csv``), which gives the same
records unless a quoted field spans lines; a file with both is refused, naming the empty line.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from typing import Any

from kexp.data.sources.csv import CellReader, Plan, _rows_checked, label_vocabulary
from kexp.data.stream import Stream
from kexp.errors import ConfigError
from kexp.tf import tf


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass
class Scan:
    """What the validating pass learned about a csv file."""

    rows: int = 0
    #: String label values seen.
    labels: set[str] = field(default_factory=set)
    #: Per numeric label column: all finite whole numbers (read as int64 class ids).
    whole: dict[str, bool] = field(default_factory=dict)
    #: Line of the first empty line between records (CsvDataset cannot skip it), or None.
    empty_line: int | None = None
    #: Line of the first record with a quoted line break in a field, or None.
    multiline: int | None = None
    #: ``(row, value)`` of the first label of a single numeric label column that is not a
    #: whole number (the column is then read as float32, not as class ids), or None.
    fraction: tuple[int, float] | None = None


def _scan(plan: Plan) -> Scan:
    """Check every row with the in-memory rules, and learn what :func:`stream_csv` needs."""
    reader = CellReader(plan)
    wanted = list(dict.fromkeys((*plan.features, *plan.labels)))
    where = {c: plan.index(c) for c in wanted}
    scan = Scan(whole={c: True for c in plan.labels if plan.types[c] == "numeric"})
    previous = 1 if plan.spec.header else 0  # the line the last record ended on
    with plan.open() as handle:
        for line, row in _rows_checked(plan, handle):
            scan.rows += 1
            breaks = sum(len(_LINE_BREAK.findall(cell)) for cell in row)
            if breaks and scan.multiline is None:
                scan.multiline = line
            if line - breaks - previous > 1 and scan.empty_line is None:
                scan.empty_line = previous + 1
            previous = line
            for c in wanted:
                value = reader.value(row[where[c]], c, line)
                if plan.string_label and c == plan.labels[0]:
                    scan.labels.add(value)
                elif scan.whole.get(c) and not (abs(value) < 2.0**63 and value == round(value)):
                    scan.whole[c] = False
                    if len(plan.labels) == 1 and plan.outputs is None:
                        scan.fraction = (scan.rows - 1, float(value))
    if not scan.rows:
        raise ConfigError.single(plan.at + ("path",), f"{plan.file.name} has no data rows")
    if scan.empty_line is None and previous and _ends_with_empty_line(plan, previous):
        scan.empty_line = previous + 1
    if scan.empty_line is not None and scan.multiline is not None:
        raise ConfigError.single(
            plan.at + ("path",),
            f"{plan.file.name} line {scan.empty_line} is empty, and a quoted field spans lines "
            f"(line {scan.multiline}): a streamed csv can have one or the other; remove the "
            "empty line(s)",
        )
    return scan


def _ends_with_empty_line(plan: Plan, last: int) -> bool:
    """Whether an empty line follows the last record (the csv reader skips it unreported):
    the file ends with two line breaks in a row."""
    with plan.file.open("rb") as handle:
        handle.seek(max(0, plan.file.stat().st_size - 8))
        tail = handle.read()
    for end in (b"\r\n", b"\n", b"\r"):
        if tail.endswith(end):
            return tail[: -len(end)].endswith((b"\n", b"\r"))
    return False


#: Text every csv number and delimiter is written with: an encoding that writes it as ASCII
#: does (latin-1, cp1252) gives tf.data, which reads bytes, the same numbers Python reads.
_NUMBER_TEXT = "0123456789+-.eEnaNAinfINF \t\r\n"


def _check_encoding(plan: Plan, wanted: list[str]) -> None:
    """What tf.data can read as Python did: it reads bytes and takes text as UTF-8."""
    spec = plan.spec
    at = plan.at + ("encoding",)
    if codecs.lookup(spec.encoding).name == "utf-8":
        if not spec.header:  # a header line is skipped whole; a first record is not
            with plan.file.open("rb") as handle:
                if handle.read(3) == codecs.BOM_UTF8:
                    raise ConfigError.single(
                        plan.at + ("path",),
                        f"{plan.file.name} starts with a UTF-8 byte-order mark, which the "
                        "streamed reading (tf.data) takes as part of the first cell of a file "
                        "without header; remove it, or read the file whole (stream: false)")
        return
    text = _NUMBER_TEXT + spec.delimiter
    if text.encode(spec.encoding, errors="replace") != text.encode("utf-8"):
        raise ConfigError.single(
            at, f"a streamed csv is read by tf.data as bytes, and {spec.encoding} does not "
            "write numbers and the delimiter as ASCII does; convert the file to UTF-8")
    strings = [c for c in wanted if plan.types[c] == "string"]
    if strings:
        raise ConfigError.single(
            at, f"a streamed csv is read by tf.data as UTF-8: its string column(s) "
            f"{', '.join(map(repr, strings))} would not read as in {spec.encoding}; convert "
            "the file to UTF-8, or read it whole (stream: false)")


def stream_csv(plan: Plan, known: list[str] | None) -> Stream:
    """A :class:`Stream` over a validated csv file."""
    _check_encoding(plan, list(dict.fromkeys((*plan.features, *plan.labels))))
    scan = _scan(plan)
    rows, whole = scan.rows, scan.whole
    class_names = label_vocabulary(sorted(scan.labels), plan, known) if plan.string_label else None
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
        if kind == "numeric":  # nan, inf: missing, as CellReader reads them
            missing = tf.logical_or(missing, tf.logical_not(tf.math.is_finite(value)))
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

    defaults = [tf.constant("", dtype=tf.string)] * len(selected)

    def records() -> Any:
        if scan.empty_line is None:
            return tf.data.experimental.CsvDataset(
                str(plan.file), record_defaults=defaults, header=spec.header,
                field_delim=spec.delimiter, select_cols=selected,
            )
        lines = tf.data.TextLineDataset(str(plan.file)).skip(1 if spec.header else 0)
        lines = lines.filter(lambda text: tf.logical_not(tf.strings.regex_full_match(text, "\r?")))
        return lines.map(lambda text: tuple(tf.io.decode_csv(
            text, record_defaults=defaults, field_delim=spec.delimiter, select_cols=selected)))

    def build() -> Any:
        return records().map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    # every cell was checked by the scan: no NaN guard needed
    return Stream(build, rows, bool(plan.labels), [str(plan.file)], class_names,
                  at=plan.at + ("path",), first_fraction=scan.fraction)

