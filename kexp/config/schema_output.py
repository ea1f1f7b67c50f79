"""``kexp schema``: render the JSON Schema or the reference page, and write it safely.

Regenerating after an upgrade is the normal use, so a file kexp generated itself may be
replaced; anything else at the target path is a user's file and is never overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path

from kexp.errors import UserError

FORMATS = ("json", "markdown")


def render_schema(fmt: str) -> str:
    """The JSON Schema (``json``) or the reference page (``markdown``) as text."""
    if fmt == "json":
        from kexp.config.jsonschema import json_schema

        return json.dumps(json_schema(), indent=2) + "\n"
    if fmt == "markdown":
        from kexp.config.reference import reference_markdown

        return reference_markdown()
    from kexp.errors import nearest

    guess = nearest(fmt, FORMATS)
    raise UserError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'"
                    + (f"; did you mean '{guess}'?" if guess else ""))


#: The file name endings each format is written under.
SUFFIXES = {"json": (".json",), "markdown": (".md", ".markdown")}


def check_suffix(path: Path, fmt: str, option: str = "--output") -> None:
    """A JSON Schema goes in a ``.json`` file and the reference page in a ``.md`` one: the
    name says what the file holds (a markdown page written to ``kexp.schema.json`` replaced
    the schema an editor reads)."""
    wanted = SUFFIXES[fmt]
    if path.suffix.lower() not in wanted:
        other = next(f for f, endings in SUFFIXES.items() if f != fmt)
        hint = (f", or give --format {other}" if path.suffix.lower() in SUFFIXES[other]
                else "")
        raise UserError(f"{option} {path}: --format {fmt} writes a file whose name ends in "
                        f"{' or '.join(wanted)}{hint}")


def is_generated(path: Path) -> bool:
    """Whether ``path`` holds a schema or reference page kexp wrote (so may be replaced)."""
    from kexp.config.jsonschema import TITLE
    from kexp.config.reference import MARKER

    if not path.is_file():  # a pipe or a device: never read (it may never end), never ours
        return False
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if text.startswith(MARKER):
        return True
    try:
        return json.loads(text).get("title") == TITLE
    except (ValueError, AttributeError):
        return False


def write_generated(path: Path, text: str, option: str = "--output",
                    fmt: str | None = None) -> None:
    """Write ``text`` to ``path``, replacing only a file kexp generated.

    The target is checked like every file kexp is asked to write (:mod:`kexp.outputs`): a
    folder, a parent that is a file or a folder that refuses new files is a user error
    naming ``option``; with ``fmt``, so is a name that does not end as that format's do.
    """
    from kexp.outputs import check_output_file, writing
    from kexp.training.artifacts import write_text

    if path.is_file() and not is_generated(path):
        raise UserError(f"{path} exists and was not written by `kexp schema`; "
                        "kexp never overwrites it (choose another file)")
    check_output_file(path, option, may_replace=is_generated, example="kexp.schema.json")
    if fmt is not None:
        check_suffix(path, fmt, option)
    with writing(path, option):
        write_text(path, text)
