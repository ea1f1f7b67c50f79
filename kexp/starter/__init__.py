"""``kexp init``: a commented starter config that validates and trains as it is.

A starter that needs editing before it runs teaches nothing, so ``kexp init`` writes, next to
the config, the small real dataset it trains on (Fisher's iris, 150 rows, in ``data/``) and
the JSON Schema its first line points editors at. It never overwrites anything: an existing
config is an error, an identical data file is left alone, a different one is an error
(before anything is written), an existing ``kexp.schema.json`` is kept.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from kexp.errors import UserError

_HERE = Path(__file__).resolve().parent
#: The data files every starter reads, relative to the config.
DATA_FILES = ("data/iris_train.csv", "data/iris_test.csv")
SCHEMA_FILE = "kexp.schema.json"
_TEMPLATE_NAME = "kexp.yaml"  # how the templates' comments refer to the config file


def template(functional: bool = False) -> str:
    """The starter config text (Sequential, or Functional with a residual connection)."""
    name = "functional.yaml" if functional else "sequential.yaml"
    return (_HERE / name).read_text(encoding="utf-8")


@dataclass
class Written:
    """What ``kexp init`` wrote, and what it found already there and kept."""

    written: list[Path]
    kept: list[Path]


def write_starter(path: str | Path, functional: bool = False) -> Written:
    """Write the starter config to ``path``, plus its data and schema next to it."""
    from kexp.config.jsonschema import json_schema
    from kexp.outputs import check_output_file, writing

    path = Path(path)
    if os.path.lexists(path):
        raise UserError(f"{path} already exists; kexp init never overwrites a file "
                        "(give another name: kexp init other.yaml)")
    if path.suffix not in (".yaml", ".yml"):
        raise UserError(f"{path}: a config file name ends in .yaml or .yml")
    folder = path.parent
    plan: list[tuple[Path, bytes]] = []
    kept: list[Path] = []
    for relative in DATA_FILES:
        content = (_HERE / relative).read_bytes()
        target = folder / relative
        if target.is_file():
            if target.read_bytes() != content:
                raise UserError(f"{target} exists and is not the iris data the starter trains "
                                "on; kexp init never overwrites a file (choose another folder)")
            kept.append(target)
        else:
            plan.append((target, content))
    schema = folder / SCHEMA_FILE
    if schema.is_file():
        kept.append(schema)
    else:
        plan.append((schema, (json.dumps(json_schema(), indent=2) + "\n").encode()))
    text = template(functional).replace(_TEMPLATE_NAME, path.name)
    plan.insert(0, (path, text.encode()))
    for target, _ in plan:  # each in a folder that takes new files (made if missing)
        check_output_file(target, "kexp init")

    written = []
    for target, content in plan:
        with writing(target, "kexp init"):
            target.parent.mkdir(parents=True, exist_ok=True)
            # "x": fail rather than overwrite, even in a race
            with open(target, "xb") as handle:
                handle.write(content)
        written.append(target)
    return Written(written, kept)
