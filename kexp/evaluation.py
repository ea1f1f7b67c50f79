"""``kexp evaluate``: a saved model's metrics on the run's test split or on given data.

    metrics = evaluate("experiments/digits-cnn/20261203-120000-ab12cd")
    metrics = evaluate("model.keras", data="more_digits.npz", x="images", y="labels")

With a run directory and no ``data``, the test split the run declared is used: its source,
or exactly the held-out indices of a fraction split (``splits.npz``). The training source is
read only for a fraction split; class names and the files a TFRecord glob matched come from
the run's manifest (:class:`kexp.data.splits.Recorded`). A warning is printed when a data
file the run was trained on has changed since.
"""

from __future__ import annotations

import os

import re
from pathlib import Path
from typing import Any

from rich.console import Console

from kexp.config.schema import SplitSpec
from kexp.data.pipeline import make_dataset
from kexp.data.splits import Recorded, load_splits, read_indices
from kexp.display import metrics_table
from kexp.errors import UserError
from kexp.inputs import check_fits, read_input
from kexp.manifest import now
from kexp.outputs import check_output_file, output_problem, writing
from kexp.runs import changed_data_files, load_model, resolve_target
from kexp.training.artifacts import write_json


def evaluate(
    target: str | Path,
    *,
    data: str | Path | None = None,
    x: str | dict[str, str] | None = None,
    y: str | dict[str, str] | None = None,
    label: str | dict[str, str] | None = None,
    features: list[str] | None = None,
    batch_size: int | None = None,
    output: str | Path | None = None,
    out: Console | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate and return ``{"metrics": {...}, "examples": n, ...}``.

    The result is written as JSON to ``output`` (a new file: an existing one is replaced only
    with ``overwrite``) or, for a run directory, to a new file ``<run>/evaluations/<UTC time>.json``
    (the training-time ``evaluation.json`` is kept). Either is checked before the model is
    loaded, so a place that cannot be written costs no evaluation.
    """
    say = out or Console(stderr=True)
    if output is not None:
        check_output_file(output, "--output", example="evaluation.json",
                          may_replace=lambda _: overwrite,
                          inputs={**({data: "the data being evaluated"} if data else {}),
                                  target: "the model"},
                          suffixes=(".json",))
    found = resolve_target(target)
    config = found.config
    stamp = now().replace(":", "").replace("+0000", "Z")
    record = None
    if output is None and found.run_dir is not None:
        record = found.run_dir / "evaluations" / f"{stamp}.json"
        problem = output_problem(record)
        if problem is not None:
            raise UserError(f"cannot record the evaluation in {record.parent}: {problem}; "
                            "give --output FILE to write it elsewhere")
    for warning in changed_data_files(found.manifest()):
        say.print(f"[yellow]warning:[/yellow] data changed since training: {warning}")
    manifest = found.manifest()
    class_names = manifest.data.get("class_names") if manifest else None
    if data is not None:
        arrays = read_input(data, config, labels=True, class_names=class_names,
                            x=x, y=y, label=label, features=features)
        split = str(data)
    else:
        if config is None:
            raise UserError("a model file outside a run directory needs --data FILE")
        if config.data.test is None:
            raise UserError(
                f"the run's config declares no test split (data.test); pass --data FILE"
            )
        held_out = isinstance(config.data.test, SplitSpec)  # a fraction of train: its indices
        saved = read_indices(found.run_dir / "splits.npz") if held_out else None
        recorded = Recorded.from_manifest(manifest.data) if manifest else None
        arrays = load_splits(config.data, config.seed or 0, ("test",), saved_indices=saved,
                             recorded=recorded).test
        split = "test"
    if not arrays.has_labels:
        raise UserError("evaluation needs labels (give --y KEY or --label COLUMN)")
    model = load_model(found.model_file, safe_mode=found.safe_mode)
    if data is not None:  # the same check as kexp predict's, and the labels too
        check_fits(model, arrays, data, labels=True)
    batch = batch_size or (config.data.batch_size if config else 32)
    dataset = make_dataset(arrays, batch, training=False, seed=0, cache=False)
    try:
        scores = model.evaluate(dataset, return_dict=True, verbose=0)
    except Exception as exc:
        # a label beyond the first examples that only the traced step sees (a streamed file)
        found_label = re.search(r"Received a label value of (-?\d+) which is outside the "
                                r"valid range of \[0, (\d+)\)", str(exc))
        if found_label is None:
            raise
        raise UserError(
            f"{data or 'the test split'}: a label is {found_label.group(1)}, but the model "
            f"has {found_label.group(2)} classes: sparse categorical labels must be in "
            f"[0, {found_label.group(2)})") from None
    metrics = {k: float(v) for k, v in scores.items()}
    result = {  # absolute: the record is read later, from anywhere
        "model": str(Path(found.model_file).absolute()),
        "split": split if data is None else str(Path(data).absolute()),
        "examples": len(arrays),
        "metrics": metrics,
    }
    say.print(metrics_table({split: metrics}, title=f"evaluation of {found.model_file.name}"))
    if output is not None:
        target_file, option = Path(output), "--output"
    else:  # its name taken only now, once there is a record to write
        target_file, option = (_new_record(record) if record is not None else None), None
    if target_file is not None:
        with writing(target_file, option or "the evaluation record"):
            write_json(target_file, result)
    return result


def _new_record(planned: Path) -> Path:
    """``planned`` (``evaluations/<UTC second>.json``), or ``<second>-2.json``, ``-3``, ...
    if an evaluation in the same second (from Python, or a second process) took it first.

    The name is reserved by creating the file exclusively, so two processes never pick the
    same one; the record then replaces the empty file atomically. Was: a later evaluation in
    the same second overwrote the earlier one's record.
    """
    planned.parent.mkdir(parents=True, exist_ok=True)
    for count in range(1, 10_000):
        name = planned if count == 1 else planned.with_name(f"{planned.stem}-{count}.json")
        try:
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue
        return name
    raise UserError(f"cannot record the evaluation in {planned.parent}: 10,000 records of "
                    f"the second {planned.stem} are there already")
