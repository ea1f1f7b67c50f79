"""Data named on the command line (``--data``/``--input``), read like the run's own sources,
and checked against the model before it is used.

With a run directory, a file of the same kind as the run's training source is read with the
same keys or columns (and, for csv, the same column types, missing-value rules and class
names); otherwise the kind is taken from the file's suffix and the keys from the options
(``--x``/``--y`` for npz, ``--feature``/``--label`` for csv; ``--y OUTPUT=KEY`` and
``--label OUTPUT=COLUMN``, repeated, for a model with several outputs). A run trained on an
image or text folder also reads a folder (one sub-folder per class when labels are needed),
a run on images a single image file, and a run on TFRecords a TFRecord file.

Labels are read only when the command needs them (``kexp evaluate``): new data to predict on
has none, so a label column the run's config names may be missing from a csv given to
``kexp predict`` (when it is there, it is left out of the features).

A mistake is reported as the option or file that caused it, never as the key path of a
config the user cannot change for this command: ``input.column_types.x`` in a hint means
nothing to ``kexp predict``, whose column types are the run's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kexp.config.schema import (
    CsvSource,
    ExperimentConfig,
    ImageDirSource,
    NpzSource,
    TextDirSource,
    TfrecordSource,
)
from kexp.data.sources import SourceContext, load_source
from kexp.errors import ConfigError, ConfigIssue, UserError, nearest

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp")

#: The key path a command-line file's problems are found at (a source spec's ``at``).
AT = ("input",)

#: The option that names each key of a command-line file's source spec.
OPTIONS = {"x": "--x", "y": "--y", "label": "--label", "features": "--feature"}

#: Keys or columns: one name, or one per model input/output.
Keys = str | dict[str, str]


def parse_keys(values: Sequence[str] | str | None, option: str) -> Keys | None:
    """``--y labels`` -> ``"labels"``; ``--y digit=labels --y parity=odd`` -> a dict keyed by
    output (or input) name, as a config's ``y: {digit: labels, parity: odd}``."""
    if values is None or isinstance(values, str):
        return values
    values = list(values)
    if not values:
        return None
    part = "INPUT" if option == "--x" else "OUTPUT"
    named = [v.partition("=") for v in values]
    if all(sep for _, sep, _ in named):
        keys: dict[str, str] = {}
        for name, _, key in named:
            if not name or not key or name in keys:
                raise UserError(f"{option} {name}={key}: give each {part.lower()} once, as "
                                f"{option} {part}=KEY")
            keys[name] = key
        return keys
    if len(values) == 1:
        return values[0]
    raise UserError(f"{option} is given {len(values)} times: for a model with several "
                    f"{part.lower()}s give each as {option} {part}=KEY (e.g. {option} a=... "
                    f"{option} b=...); otherwise give it once")


def _label_columns(label: Any) -> set[str]:
    if label is None:
        return set()
    if isinstance(label, str):
        return {label}
    return set(label.values() if isinstance(label, dict) else label)


def _csv_source(path: Path, run: CsvSource | None, *, labels: bool, label: Any,
                features: list[str] | None) -> CsvSource:
    """A csv file read like the run's csv (types, fills, delimiter), or plainly."""
    chosen_label = label or (run.label if run else None)
    if labels and chosen_label is None:
        raise UserError("say which column holds the labels: --label COLUMN")
    used_label = chosen_label if labels else None
    cols = features or (run.features if run else None)
    if run is None:
        return CsvSource(source="csv", path=str(path.resolve()), features=cols,
                         label=used_label)
    update: dict[str, Any] = {"path": str(path.resolve()), "label": used_label}
    names = None
    if not run.header and run.column_names and not labels:
        names = update["column_names"] = _names_without_label(path, run, chosen_label)
    if cols is None and not labels:
        # a file to predict on may still carry the label column: leave it out
        columns = (_first_row(path, run) or []) if run.header else names or []
        cols = [c for c in columns if c not in _label_columns(chosen_label)] or None
    update["features"] = cols
    if cols is not None:
        # the run's types and fills of the columns read here only: one it declares for the
        # label (or a column this file need not have) must not require that column
        read = {c for group in (cols.values() if isinstance(cols, dict) else [cols])
                for c in group} | _label_columns(used_label)
        update["column_types"] = {c: t for c, t in run.column_types.items() if c in read}
        update["fill"] = {c: v for c, v in run.fill.items() if c in read}
    return run.model_copy(update=update)


def _first_row(path: Path, run: CsvSource) -> list[str] | None:
    """The first row of a csv file, read as the run reads it (delimiter, encoding), or None
    when it cannot be: the source then reads the file and names the problem."""
    import codecs
    import csv

    encoding = getattr(run, "encoding", "utf-8")
    try:  # like the source: a UTF-8 byte-order mark is not part of the first column's name
        codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
        with path.open(newline="", encoding=codec) as handle:
            row = next(csv.reader(handle, delimiter=run.delimiter), None)
    except (LookupError, OSError, UnicodeError, csv.Error):
        return None
    return [cell.strip() for cell in row] if row else None


def _names_without_label(path: Path, run: CsvSource, label: Any) -> list[str]:
    """A file without a header row has the run's ``column_names`` minus the label columns
    when its rows are that much narrower (new data, without labels)."""
    names = list(run.column_names or [])
    kept = [n for n in names if n not in _label_columns(label)]
    first = _first_row(path, run)
    return kept if first is not None and len(first) == len(kept) != len(names) else names


def source_for_file(
    file: str | Path,
    config: ExperimentConfig | None,
    *,
    labels: bool,
    x: Keys | None = None,
    y: Keys | None = None,
    label: Keys | None = None,
    features: list[str] | None = None,
) -> Any:
    """A source spec for ``file``: keys/columns from options, else from the run's train source.

    An option that does not apply to the file's kind is refused, not ignored: ``--x`` and
    ``--y`` name npz keys, ``--feature`` and ``--label`` csv columns.
    """
    path = Path(file)
    kind = path.suffix.lower()
    for given, option, applies, instead in ((x, "--x", ".npz", "--feature COLUMN"),
                                            (y, "--y", ".npz", "--label COLUMN"),
                                            (features, "--feature", ".csv", "--x KEY"),
                                            (label, "--label", ".csv", "--y KEY")):
        if given and kind != applies:
            use = f"; for a {kind} file use {instead}" if kind in (".npz", ".csv") else ""
            what = "keys of an npz file" if applies == ".npz" else "columns of a csv file"
            raise UserError(f"{option} names {what}, and {path.name} is not one{use}")
    train = config.data.train if config is not None else None
    if path.is_dir():
        if isinstance(train, (ImageDirSource, TextDirSource)):
            return train.model_copy(update={"path": str(path.resolve()), "labels": labels})
        raise UserError(f"{path} is a folder: only a run trained on image_dir or text_dir "
                        "data reads folders")
    if path.is_symlink() and not path.exists():
        raise UserError(f"{path} is a symbolic link to nothing (or a loop of links)")
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
        return _csv_source(path, train if isinstance(train, CsvSource) else None,
                           labels=labels, label=label, features=features)
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
        return load_source(spec, AT, SourceContext(class_names=class_names))
    except ConfigError as exc:
        run_csv = config is not None and isinstance(config.data.train, CsvSource)
        raise _as_user_error(exc, Path(file), spec if run_csv else None) from None


# ------------------------------------------------------------------------------ wording


def _as_user_error(exc: ConfigError, file: Path, run_csv: Any) -> UserError:
    """The issues of a command-line file as one user error: each prefixed with the file
    (and the option, where one names the key: ``--label``), its hints in this command's
    terms."""
    return UserError("\n".join(_issue_text(i, file, run_csv) for i in exc.issues))


def _issue_text(issue: ConfigIssue, file: Path, run_csv: Any) -> str:
    key = issue.path[len(AT)] if len(issue.path) > len(AT) else None
    option = OPTIONS.get(key) if isinstance(key, str) else None
    message = _command_hint(issue.message, run_csv)
    if message.startswith(f"{file.name} line "):  # named once: "x.csv: line 3, ..."
        message = message[len(file.name) + 1:]
    text = f"{file.name}: " + (f"{option}: " if option else "") + message
    if issue.suggestion:
        text += f"; did you mean '{issue.suggestion}'?"
    return text


#: Hints the csv reader gives in terms of a config key (``input.column_types.x``), which a
#: command-line file does not have: pattern -> what to say instead (with a run / without).
_CONFIG_HINTS = (
    (re.compile(r"; if it holds categories, declare input\.column_types\.(?P<col>.+?): string"),
     "; the run reads column '{col}' as numbers (its data.train.column_types), as the model "
     "was trained",
     "; without its run, kexp reads csv columns as numbers: name the feature columns with "
     "--feature COLUMN (repeated), or give the run directory, whose config has the column "
     "types"),
    (re.compile(r"; declare a value for it in input\.fill\.(?P<col>.+?) or remove the row"),
     "; the run declares no fill for column '{col}' (data.train.fill): fill in the cell or "
     "remove the row",
     "; fill in the cell or remove the row"),
    (re.compile(r"; declare its encoding in input\.encoding \([^)]*\), or convert it to UTF-8"),
     "; convert it to the run's encoding ({encoding})",
     "; convert it to UTF-8"),
)


def _command_hint(message: str, run_csv: Any) -> str:
    for pattern, with_run, without in _CONFIG_HINTS:
        found = pattern.search(message)
        if found:
            said = (with_run.format(**found.groupdict(),
                                    encoding=getattr(run_csv, "encoding", "utf-8"))
                    if run_csv is not None else without)
            message = message[:found.start()] + said + message[found.end():]
    return message


# ------------------------------------------------------------------- checks against the model

#: Examples of a command-line file that go through the model before the whole file does.
HEAD = 8


def check_fits(model: Any, arrays: Any, file: str | Path, *, labels: bool) -> None:
    """The first examples of ``file`` through ``model`` (and, with ``labels``, its loss), and
    its labels against the model's outputs and classes: a mistake is a :class:`UserError`
    naming the file and the option to change, not a TensorFlow error from inside
    ``predict``/``evaluate``.

    Shared by ``kexp predict`` and ``kexp evaluate``, so both say the same of the same file.
    """
    name = Path(file).name
    kind = Path(file).suffix
    x, y = arrays.head(HEAD)
    try:
        y_pred = model(x, training=False)
    except Exception as exc:
        how = {".npz": "; --x names the array of features (--x INPUT=KEY for each input)",
               ".csv": "; --feature names the feature columns"}.get(kind, "")
        raise UserError(
            f"{name}: features of shape {_shapes(x)} per example do not fit the model input "
            f"{_model_inputs(model)}: {_first_line(exc)}{how}") from None
    if not labels or y is None:
        return
    outputs = _output_names(model, y_pred)
    option = {".npz": "--y", ".csv": "--label"}.get(kind)
    _check_structure(name, outputs, y, option)
    _check_classes(name, model, arrays, y, y_pred, outputs, option)
    try:
        model.compute_loss(x=x, y=y, y_pred=y_pred)
    except Exception as exc:
        raise UserError(
            f"{name}: labels of shape {_shapes(y)} per example do not fit the model's loss "
            f"with its output of shape {_shapes(_numpy(y_pred))}: {_first_line(exc)}"
            + (f" ({option} names the labels)" if option else "")) from None


def _output_names(model: Any, y_pred: Any) -> list[str] | None:
    """The names of a model's outputs, or None for a model with one output."""
    if isinstance(y_pred, dict):
        return list(y_pred)
    if isinstance(y_pred, (list, tuple)):
        names = list(getattr(model, "output_names", None) or [])
        return names if len(names) == len(y_pred) else [str(i) for i in range(len(y_pred))]
    return None


def _check_structure(name: str, outputs: list[str] | None, y: Any, option: str | None) -> None:
    """One label array for a model with one output; one per output, by name, otherwise."""
    if outputs is None:
        if isinstance(y, dict):
            raise UserError(f"{name}: the model has one output, but labels were given for "
                            f"{', '.join(map(repr, y))}" + (f": give one {option} KEY"
                                                            if option else ""))
        return
    listed = ", ".join(f"'{o}'" for o in outputs)
    how = (f": give the labels of each as {option} OUTPUT=KEY, e.g. "
           + " ".join(f"{option} {o}=..." for o in outputs)) if option else ""
    if not isinstance(y, dict):
        raise UserError(f"{name}: the model has {len(outputs)} outputs ({listed}), but one "
                        f"label array was given{how}")
    unknown = [k for k in y if k not in outputs]
    if unknown:
        guess = nearest(unknown[0], outputs)
        raise UserError(f"{name}: the model has no output '{unknown[0]}' (its outputs: "
                        f"{listed})" + (f"; did you mean '{guess}'?" if guess else ""))
    missing = [o for o in outputs if o not in y]
    if missing:
        raise UserError(f"{name}: no labels for output(s) {', '.join(map(repr, missing))} "
                        f"(the model has {listed}){how}")


def _check_classes(name: str, model: Any, arrays: Any, y: Any, y_pred: Any,
                   outputs: list[str] | None, option: str | None) -> None:
    """Labels of an output with a sparse categorical loss are class ids in [0, classes).

    Keras finds one outside only inside the traced step (``Received a label value of 7
    which is outside the valid range``); training checks the same before fitting.
    """
    losses = _losses(model, outputs)
    every = getattr(arrays, "y", None)  # Arrays: every label, not only the first few
    for output, loss in losses.items():
        if not _is_sparse(loss):
            continue
        predicted = y_pred if output is None else (
            y_pred[output] if isinstance(y_pred, dict) else y_pred[outputs.index(output)])
        classes = int(predicted.shape[-1])
        if every is not None:
            labels = np.asarray(every if output is None else every[output])
            if labels.dtype.kind not in "biuf" or not labels.size:
                continue
            low, high = float(labels.min()), float(labels.max())
        else:
            found = arrays.label_range() if output is None else None
            if found is None:
                continue
            low, high = found
        which = f"of output '{output}' " if output is not None else ""
        if low < 0 or high >= classes:
            raise UserError(
                f"{name}: labels {which}range from {low:g} to {high:g}, but the model has "
                f"{classes} classes: sparse categorical labels must be in [0, {classes})"
                + (f" ({option} names the labels)" if option else ""))
        fraction = arrays.fractional_label(output)  # as training refuses it (probe)
        if fraction is not None:
            example, value = fraction
            raise UserError(
                f"{name}: label {which}{value:g} of example {example + 1} (counting from 1) "
                "is not a whole number, "
                "but sparse categorical labels are class ids (Keras would take it as class "
                f"{int(value)} without a word)")


def _losses(model: Any, outputs: list[str] | None) -> dict[str | None, Any]:
    """The compiled loss of each output (None: the model's only output)."""
    loss = getattr(model, "loss", None)
    if outputs is None:
        return {None: loss}
    if hasattr(loss, "items"):
        return {o: loss[o] for o in outputs if o in loss}
    if isinstance(loss, (list, tuple)):
        return dict(zip(outputs, loss))
    return {o: loss for o in outputs}


def _is_sparse(loss: Any) -> bool:
    """A loss taking class ids: sparse_categorical_crossentropy, its class, or a custom
    loss named so (a focal loss for integer labels, ``SparseFocalLoss``)."""
    if loss is None:
        return False
    if isinstance(loss, str):
        return "sparse" in loss.lower()
    names = (getattr(loss, "__name__", ""), getattr(loss, "name", ""), type(loss).__name__)
    return any("sparse" in str(n).lower() for n in names)


def _shapes(tensors: Any) -> str:
    if isinstance(tensors, dict):
        return ", ".join(f"{k}: {tuple(np.shape(v)[1:])}" for k, v in tensors.items())
    return str(tuple(np.shape(tensors)[1:]))


def _numpy(tensors: Any) -> Any:
    if isinstance(tensors, dict):
        return {k: np.asarray(v) for k, v in tensors.items()}
    if isinstance(tensors, (list, tuple)):
        return {str(i): np.asarray(v) for i, v in enumerate(tensors)}
    return np.asarray(tensors)


def _model_inputs(model: Any) -> str:
    shapes = [tuple(t.shape[1:]) for t in model.inputs]
    return str(shapes[0]) if len(shapes) == 1 else str(shapes)


def _first_line(exc: BaseException) -> str:
    """What a Keras/TF error says went wrong, on one line: Keras' own message (the bold part
    of "Exception encountered when calling Sequential.call()."), with any array it prints
    (the whole input, over many lines) shown as ``[...]``."""
    text = str(exc)
    bold = re.search(r"\x1b\[1m(.*?)\x1b\[0m", text, re.S)
    for line in _without_arrays(bold.group(1) if bold else text).strip().splitlines():
        line = line.strip()
        if line and not line.startswith("Exception encountered when calling"):
            return line.rstrip(".")
    return type(exc).__name__


def _without_arrays(text: str) -> str:
    """``text`` with each printed nested array (from ``[[`` to its closing bracket) as
    ``[...]``."""
    out, index = [], 0
    while (start := text.find("[[", index)) >= 0:
        depth, end = 0, start
        while end < len(text):
            depth += {"[": 1, "]": -1}.get(text[end], 0)
            end += 1
            if depth == 0:
                break
        out.append(text[index:start] + "[...]")
        index = end
    return "".join(out) + text[index:]
