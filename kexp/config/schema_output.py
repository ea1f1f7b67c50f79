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


def is_generated(path: Path) -> bool:
    """Whether ``path`` holds a schema or reference page kexp wrote (so may be replaced)."""
    from kexp.config.jsonschema import TITLE
    from kexp.config.reference import MARKER

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


def write_generated(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, replacing only a file kexp generated."""
    if path.is_dir():
        raise UserError(f"{path} is a directory; give a file name, e.g. {path / 'kexp.schema.json'}")
    if path.exists() and not is_generated(path):
        raise UserError(f"{path} exists and was not written by `kexp schema`; "
                        "kexp never overwrites it (choose another file)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
