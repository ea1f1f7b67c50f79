"""``source: csv``: a table; feature and label columns chosen by name, each of a declared type.

    train: {source: csv, path: data/penguins_train.csv, label: species,
            column_types: {island: string, sex: string}, fill: {sex: unknown}}

Column types are ``numeric`` (the default), ``string`` (categories, free text) and ``integer``
(ids). When every feature is numeric the features are one matrix (as a model with one input
of shape ``[n_features]`` expects); otherwise they are a dict keyed by column name, each of
shape ``(1,)``, to be encoded by ``data.preprocessing.columns`` (StringLookup, ...). A string
label column is turned into class ids in the sorted order of the training file's values, and
the names are recorded in the run so ``kexp predict`` reports them.

A model with several inputs or outputs takes its columns by name, as npz takes its arrays:
``features: {pixels: [...], stats: [...]}`` makes one matrix per input (numeric columns),
``label: {digit: label, parity: odd}`` one label array per output (numeric columns).

A cell listed in ``na_values`` is missing, and so is a number that is not finite (``nan``,
``inf``): it takes the column's ``fill`` value, or is an error naming the line and column.
The file is read in its declared ``encoding`` (default UTF-8, a byte-order mark skipped);
text that does not decode is an error naming the line and byte. Files too large for memory are streamed with tf.data (see
:mod:`kexp.data.sources.csv_stream`) after one validating pass; both readings give the same
values.
"""

from __future__ import annotations

import codecs
import csv
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from kexp.config.schema import CsvSource
from kexp.data.arrays import Arrays
from kexp.data.files import require
from kexp.data.memory import budget
from kexp.errors import ConfigError, KeyPath, format_path, nearest

#: Largest file loaded whole when ``stream`` is not set; an eighth of the machine's memory
#: (:func:`kexp.data.memory.budget`) when that is smaller.
STREAM_ABOVE_BYTES = 1 << 30


@dataclass
class Plan:
    """Which columns a csv source reads, where they are in each row, and as what."""

    spec: CsvSource
    at: KeyPath
    file: Path
    columns: list[str]
    features: list[str]
    labels: list[str]
    types: dict[str, str] = field(default_factory=dict)
    #: ``features: {input name: [columns]}``: one matrix per model input; else None.
    inputs: dict[str, list[str]] | None = None
    #: ``label: {output name: column}``: one label array per model output; else None.
    outputs: dict[str, str] | None = None

    def index(self, name: str) -> int:
        return self.columns.index(name)

    def open(self) -> Any:
        """The file opened for the csv reader (decoding errors named with their line)."""
        return open_text(self.file, self.spec.encoding, self.at,
                         declared="encoding" in self.spec.model_fields_set)

    @property
    def dict_features(self) -> bool:
        """Features of mixed types are kept apart, keyed by column name."""
        return self.inputs is None and any(self.types[c] != "numeric" for c in self.features)

    @property
    def string_label(self) -> bool:
        return self.outputs is None and len(self.labels) == 1 and self.types[self.labels[0]] == "string"


def _rows(handle: Any, spec: CsvSource) -> Iterator[tuple[int, list[str]]]:
    """``(line number, cells)`` of each data row; the header (if any) is skipped."""
    reader = csv.reader(handle, delimiter=spec.delimiter)
    if spec.header:
        next(reader, None)
    for row in reader:
        if row:
            yield reader.line_num, row


def _codec(encoding: str) -> str:
    """The codec to open a file with: UTF-8 skips a byte-order mark (Excel writes one),
    which would otherwise stick to the first column's name."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def _undecodable(path: Path, encoding: str) -> tuple[int, int, bytes] | None:
    """``(line, byte offset, bytes)`` of the first bytes of ``path`` that ``encoding`` cannot
    decode, or None: a second pass in binary, line by line, only once decoding failed."""
    decoder = codecs.getincrementaldecoder(_codec(encoding))()
    offset = 0
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, start=1):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as exc:
                start = max(0, exc.start - (len(exc.object) - len(raw)))  # minus held bytes
                return line, offset + start, bytes(exc.object[exc.start:exc.end])
            except UnicodeError:
                return None
            offset += len(raw)
    return None


@contextmanager
def open_text(path: Path, encoding: str, at: KeyPath, *, declared: bool = False) -> Iterator[Any]:
    """``path`` opened for the csv reader; text it cannot decode, or that is no csv text (a
    NUL byte, a field beyond the csv module's limit), is a ConfigError naming the file and
    where in it, at ``<at>.encoding`` when the user ``declared`` the encoding, else
    ``<at>.path``."""
    require(path, at + ("path",))
    try:
        with path.open(newline="", encoding=_codec(encoding)) as handle:
            yield handle
    except UnicodeError as exc:  # UnicodeDecodeError, or a codec's own (UTF-16 BOM)
        if _binary(path):
            raise ConfigError.single(at + ("path",), f"{path.name} is not a text file (it "
                                     "holds NUL bytes): is it a csv file?") from None
        where = _undecodable(path, encoding) if isinstance(exc, UnicodeDecodeError) else None
        name = encoding if declared else "UTF-8"
        found = (f"line {where[0]} has byte(s) {where[2].hex(' ')} (byte offset {where[1]})"
                 if where else str(exc))
        hint = (f"declare its encoding in {format_path(at + ('encoding',))} (e.g. latin-1 "
                "or cp1252), or convert it to UTF-8") if not declared else (
                "is that its encoding?")
        if at[:1] == ("input",):  # a file on the command line: read as the run's training csv
            hint = ("files given on the command line are read in the encoding of the run's "
                    "training csv (data.train.encoding); convert it to that")
        raise ConfigError.single(
            at + (("encoding",) if declared else ("path",)),
            f"{path.name} is not {name} text: {found}; {hint}",
        ) from None
    except csv.Error as exc:
        if _binary(path):
            raise ConfigError.single(at + ("path",), f"{path.name} is not a text file (it "
                                     "holds NUL bytes): is it a csv file?") from None
        raise ConfigError.single(
            at + ("path",), f"{path.name} cannot be read as a csv file: {exc}") from None


def _binary(path: Path) -> bool:
    """Whether the start of ``path`` holds a NUL byte, which no csv text in an 8-bit or
    UTF-8 encoding has (an image, an archive, a model file given by mistake)."""
    with path.open("rb") as handle:
        start = handle.read(8192)
    return b"\0" in start and not start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))


def read_header(path: Path, delimiter: str, at: KeyPath, encoding: str = "utf-8",
                declared: bool = False) -> list[str]:
    """The column names of a csv file's header row (a missing or empty file is an error)."""
    with open_text(path, encoding, at, declared=declared) as handle:
        header = next(csv.reader(handle, delimiter=delimiter), None)
    if not header:
        raise ConfigError.single(at + ("path",), f"{path.name} is empty (no header row)")
    return [h.strip() for h in header]


def read_table(path: Path, delimiter: str, at: KeyPath,
               encoding: str = "utf-8") -> tuple[list[str], list[list[str]]]:
    """Header and rows of a small csv file (used for files named on the command line)."""
    header = read_header(path, delimiter, at, encoding)
    with open_text(path, encoding, at) as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        next(reader, None)
        rows = [row for row in reader if row]
    return header, rows


def _check_unique(columns: list[str], at: KeyPath, file: Path, named: bool) -> None:
    """Two columns of one name: the second would silently shadow the first."""
    seen: dict[str, int] = {}
    for i, name in enumerate(columns, start=1):
        if name in seen:
            where = "the names given" if named else f"{file.name}'s header"
            raise ConfigError.single(
                at, f"columns {seen[name]} and {i} of {where} are both named '{name}'; "
                "column names must be unique"
            )
        seen[name] = i


#: Column names listed in a "no column" message; a wide file's would fill the screen.
LISTED_COLUMNS = 20


def _check_name(name: str, columns: list[str], at: KeyPath, file: Path) -> None:
    if name not in columns:
        listed = ", ".join(columns[:LISTED_COLUMNS])
        if len(columns) > LISTED_COLUMNS:
            listed += f", ... ({len(columns)} in all)"
        raise ConfigError.single(
            at, f"no column '{name}' in {file.name} (columns: {listed})",
            suggestion=nearest(name, columns),
        )


def make_plan(spec: CsvSource, at: KeyPath) -> Plan:
    """Check every column the spec names against the file's columns."""
    file = Path(spec.path)
    if spec.header:
        columns = read_header(file, spec.delimiter, at, spec.encoding,
                              "encoding" in spec.model_fields_set)
    else:
        require(file, at + ("path",))
        columns = []
    if spec.column_names:
        if columns and len(spec.column_names) != len(columns):
            raise ConfigError.single(
                at + ("column_names",),
                f"names {len(spec.column_names)} columns, {file.name} has {len(columns)}",
            )
        columns = list(spec.column_names)
        _check_unique(columns, at + ("column_names",), file, named=True)
    else:
        _check_unique(columns, at + ("path",), file, named=False)
    named_labels = _named(spec.label, "label")
    labels = [name for _, name in named_labels]
    for where, name in named_labels:
        _check_name(name, columns, at + where, file)
    named_features = _named(spec.features, "features")
    features = list(dict.fromkeys(name for _, name in named_features)) if named_features else [
        c for c in columns if c not in labels
    ]
    for where, name in named_features:
        _check_name(name, columns, at + where, file)
    if not features:
        raise ConfigError.single(at + ("features",), "no feature columns left")
    for key in ("column_types", "fill"):
        for name in getattr(spec, key):
            _check_name(name, columns, at + (key, name), file)
    types = {c: spec.column_types.get(c, "numeric") for c in (*features, *labels)}
    if len(labels) > 1 and any(types[c] == "string" for c in labels):
        raise ConfigError.single(at + ("label",), "several label columns must all be numeric")
    # a column keyed by input/output name is one of several: each input is one matrix, and
    # class names are kept for a single string label only
    for where, name in (named_features if isinstance(spec.features, dict) else []) + (
            named_labels if isinstance(spec.label, dict) else []):
        if types[name] != "numeric":
            raise ConfigError.single(
                at + where, f"column '{name}' is {types[name]}; columns keyed by input or "
                "output name must be numeric (integer ids and class names need a single input "
                "or label)")
    inputs = {k: list(v) for k, v in spec.features.items()} if isinstance(spec.features, dict) else None
    outputs = dict(spec.label) if isinstance(spec.label, dict) else None
    return Plan(spec, at, file, columns, features, labels, types, inputs, outputs)


def _named(value: Any, key: str) -> list[tuple[KeyPath, str]]:
    """``(key path, column)`` of each column ``label:``/``features:`` names, in order."""
    if value is None:
        return []
    if isinstance(value, str):
        return [((key,), value)]
    if isinstance(value, dict):
        return [((key, name) if isinstance(cols, str) else (key, name, i), col)
                for name, cols in value.items()
                for i, col in enumerate([cols] if isinstance(cols, str) else cols)]
    return [((key, i), col) for i, col in enumerate(value)]


#: The whitespace trimmed around a cell: ASCII only, as ``tf.strings.strip`` trims in the
#: streamed reading (Python's ``str.strip`` would also trim a no-break space).
SPACE = " \t\n\v\f\r"

INT64_RANGE = (-(2**63), 2**63 - 1)


def parse_number(cell: str, kind: str) -> int | float | None:
    """A numeric cell's value, or None when it is not one.

    Only text that Python and ``tf.strings.to_number`` (the streamed reading) read alike:
    Python also takes ``1_000``, non-ASCII digits (``１２``) and integers beyond int64, which
    TensorFlow refuses, so they are refused here too.
    """
    if not cell.isascii() or "_" in cell:
        return None
    try:
        value = int(cell) if kind == "integer" else float(cell)
    except ValueError:
        return None
    if kind == "integer" and not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
        return None
    return value


def whole_numbers(values: Any) -> bool:
    """Whether numeric labels are all whole numbers within int64 (then read as int64 class
    ids)."""
    y = np.asarray(values, dtype=np.float64)
    return bool(np.all(np.abs(y) < 2.0**63) and np.all(y == np.round(y)))


#: Largest magnitude a float32 holds: a larger number read into a float32 column is inf.
FLOAT32_MAX = float(np.finfo(np.float32).max)


class CellReader:
    """Turns the text of one cell into its value, with the rules shared by both readings.

    A number that is not finite (``nan``, ``NaN``, ``inf``, ``1e400``: Python and TensorFlow
    both parse them) is a missing value: it takes the column's ``fill`` or is an error. Kept,
    one NaN feature turns weights NaN while the loss can stay finite, so neither the loss nor
    ``terminate_on_nan`` would show it (:meth:`kexp.data.arrays.Arrays.check_finite`).
    """

    def __init__(self, plan: Plan):
        self.plan = plan
        self.na = set(plan.spec.na_values)
        #: Numeric columns read as float32 (labels, and features unless dtype says otherwise).
        self.float32 = {c for c in plan.labels} | (
            set(plan.features) if plan.spec.dtype == "float32" else set())

    def error(self, line: int, column: str, problem: str) -> ConfigError:
        return ConfigError.single(
            self.plan.at, f"{self.plan.file.name} line {line}, column '{column}' {problem}"
        )

    def missing(self, cell: str, column: str, line: int, why: str = "") -> Any:
        """The fill of a missing cell, or the error saying where to declare one."""
        if column not in self.plan.spec.fill:
            raise self.error(
                line, column,
                f"is missing ({cell!r}{why}); declare a value for it in "
                f"{format_path(self.plan.at + ('fill', column))} or remove the row",
            )
        return self.fill(column)

    def value(self, cell: str, column: str, line: int) -> Any:
        cell = cell.strip(SPACE)
        kind = self.plan.types[column]
        if cell in self.na:
            return self.missing(cell, column, line)
        if kind == "string":
            return cell
        number = parse_number(cell, kind)
        if number is None:
            hint = (f"; if it holds categories, declare "
                    f"{format_path(self.plan.at + ('column_types', column))}: string")
            if "_" in cell or not cell.isascii():
                hint = "; write it with ASCII digits and no '_' separators"
            word = "an integer (int64)" if kind == "integer" else "a number"
            raise self.error(line, column, f"is not {word}: {cell!r}{hint}")
        if not math.isfinite(number):
            return self.missing(cell, column, line, ": not a finite number")
        if abs(number) > FLOAT32_MAX and column in self.float32:
            raise self.error(line, column, f"is {cell!r}, beyond the range of float32 "
                             f"(largest {FLOAT32_MAX:.4g}), where it would be inf")
        return number

    def fill(self, column: str) -> Any:
        value = self.plan.spec.fill[column]
        kind = self.plan.types[column]
        if kind == "string":
            return str(value)
        try:
            number = int(value) if kind == "integer" else float(value)
        except ValueError:
            raise ConfigError.single(
                self.plan.at + ("fill", column), f"must be a number for a {kind} column"
            ) from None
        if not math.isfinite(number):
            raise ConfigError.single(
                self.plan.at + ("fill", column), f"must be a finite number (got {value!r})")
        return number


def _rows_checked(plan: Plan, handle: Any) -> Iterator[tuple[int, list[str]]]:
    width = len(plan.columns) if plan.columns else None
    for line, row in _rows(handle, plan.spec):
        if width is None:
            width = len(row)
        if len(row) != width:
            raise ConfigError.single(
                plan.at + ("path",),
                f"{plan.file.name} line {line} has {len(row)} fields, expected {width}",
            )
        yield line, row


def label_vocabulary(values: Any, plan: Plan, known: list[str] | None) -> list[str]:
    """Class names of a string label: the training split's, else the sorted values seen."""
    seen = sorted(set(values))
    if known is None:
        return seen
    unknown = [v for v in seen if v not in known]
    if unknown:
        raise ConfigError.single(
            plan.at + ("label",),
            f"{plan.file.name} has label(s) {', '.join(map(repr, unknown[:5]))} that the "
            f"training data does not have (classes: {', '.join(known)})",
        )
    return list(known)


def load_csv(spec: CsvSource, path: KeyPath, context: Any = None) -> Any:
    """Features and label(s) of a csv file: in memory, or streamed when it is large."""
    plan = make_plan(spec, path)
    # validation and test string labels take the training split's class ids
    known = context.known_classes(path + ("label",)) if (
        context is not None and plan.string_label) else None
    if _should_stream(spec, plan.file):
        from kexp.data.sources.csv_stream import stream_csv

        return stream_csv(plan, known)
    return _load_whole(plan, known)


def _should_stream(spec: CsvSource, file: Path, memory: int | None = None) -> bool:
    """``stream`` when the config sets it; otherwise stream a file larger than 1 GiB or than
    an eighth of ``memory`` (default: this machine's), whichever is smaller."""
    if spec.stream is not None:
        return spec.stream
    return file.stat().st_size > min(STREAM_ABOVE_BYTES, budget(memory))


def _load_whole(plan: Plan, known: list[str] | None) -> Arrays:
    reader = CellReader(plan)
    wanted = list(dict.fromkeys((*plan.features, *plan.labels)))
    where = {c: plan.index(c) for c in wanted}
    values: dict[str, list[Any]] = {c: [] for c in wanted}
    with plan.open() as handle:
        for line, row in _rows_checked(plan, handle):
            for c in wanted:
                values[c].append(reader.value(row[where[c]], c, line))
    if not values[wanted[0]]:
        raise ConfigError.single(plan.at + ("path",), f"{plan.file.name} has no data rows")
    return to_arrays(plan, values, known)


def _column(values: list[Any], kind: str, dtype: str = "float32") -> np.ndarray:
    if kind == "string":
        return np.asarray(values, dtype=str)
    if kind == "integer":
        return np.asarray(values, dtype=np.int64)
    return np.asarray(values, dtype=np.float64).astype(dtype)


def _label(values: list[Any], kind: str) -> np.ndarray:
    """One label column: whole numbers as int64 (class ids, from float64 so that large ones
    stay exact), other numbers float32."""
    if kind == "numeric" and whole_numbers(values):
        return np.asarray(values, dtype=np.float64).astype("int64")
    return _column(values, kind)


def to_arrays(plan: Plan, values: dict[str, list[Any]], known: list[str] | None) -> Arrays:
    """The columns read, arranged as the model takes them (matrix or dict, label ids)."""
    spec = plan.spec
    if plan.inputs is not None:
        x: Any = {name: np.stack([_column(values[c], "numeric", spec.dtype) for c in cols], axis=1)
                  for name, cols in plan.inputs.items()}
    elif plan.dict_features:
        x = {
            c: _column(values[c], plan.types[c], spec.dtype).reshape(-1, 1) for c in plan.features
        }
    else:
        x = np.stack([_column(values[c], "numeric", spec.dtype) for c in plan.features], axis=1)
    y = None
    class_names = None
    if plan.outputs is not None:
        y = {name: _label(values[c], plan.types[c]) for name, c in plan.outputs.items()}
    elif plan.string_label:
        class_names = label_vocabulary(values[plan.labels[0]], plan, known)
        ids = {name: i for i, name in enumerate(class_names)}
        y = np.asarray([ids[v] for v in values[plan.labels[0]]], dtype=np.int64)
    elif len(plan.labels) == 1:
        y = _label(values[plan.labels[0]], plan.types[plan.labels[0]])
    elif plan.labels:
        y = np.stack([_column(values[c], "numeric") for c in plan.labels], axis=1)
    return Arrays(x, y, [str(plan.file)], class_names).check(plan.at)
