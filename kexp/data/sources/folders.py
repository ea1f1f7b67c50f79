"""Class folders (``image_dir``, ``text_dir``) of a split read after the training split.

Keras' loaders take ``class_names`` as the classes to read, in id order, and read only those
sub-folders: a test folder holding a class the training data never had loses those files
without a word (10 test classes against a training folder of class ``0`` evaluated 36 of 359
images, accuracy 1.0). Keras also refuses a folder that lacks one of the classes, which an
empty sub-folder satisfies. Both are checked here first, in the user's terms.
"""

from __future__ import annotations

import os
from pathlib import Path

from kexp.errors import ConfigError, KeyPath, format_path


def class_folders(directory: Path) -> list[str]:
    """The sub-folders Keras takes as classes: visible folders, sorted."""
    return sorted(e.name for e in os.scandir(directory)
                  if not e.name.startswith(".") and e.is_dir())


def _holds(folder: Path, formats: tuple[str, ...], follow_links: bool) -> bool:
    """Whether ``folder`` (or a folder under it) holds a file the loader would read."""
    for _, _, files in os.walk(folder, followlinks=follow_links):
        if any(f.lower().endswith(formats) for f in files):
            return True
    return False


def check_classes(directory: Path, known: list[str], explicit: list[str] | None,
                  formats: tuple[str, ...], follow_links: bool, at: KeyPath) -> None:
    """The class folders of ``directory`` against the training split's classes ``known``.

    ``explicit``: the split's own ``class_names``, if it gives them: then only those are
    read, and they must be the training classes in the training order (a label id is a
    position in that list).
    """
    names = ", ".join(known)
    if explicit is not None:
        if list(explicit) != list(known[: len(explicit)]):
            raise ConfigError.single(
                at + ("class_names",),
                f"gives the classes {', '.join(explicit)}, but a label id is a position in "
                f"this list, and the training data's classes are {names}: give them in that "
                "order (or leave class_names out)")
        return
    folders = class_folders(directory)
    unseen = [f for f in folders if f not in known and _holds(directory / f, formats, follow_links)]
    if unseen:
        shown = ", ".join(map(repr, unseen[:5])) + (", ..." if len(unseen) > 5 else "")
        raise ConfigError.single(
            at + ("path",),
            f"{directory} has class folder(s) {shown} that the training data does not have "
            f"(classes: {names}); their files would be left out without a word. Remove them, "
            f"or list the classes to read in {format_path(at + ('class_names',))}")
    missing = [k for k in known if k not in folders]
    if missing:
        raise ConfigError.single(
            at + ("path",),
            f"{directory} has no folder for the training class(es) "
            f"{', '.join(map(repr, missing[:5]))}: Keras' loader needs a folder for each class "
            "(an empty one will do)")


def check_no_empty_class(directory: Path, formats: tuple[str, ...], follow_links: bool,
                         at: KeyPath) -> None:
    """Every class folder of the training split holds a file the loader reads.

    Keras counts an empty folder as a class all the same: its id exists, no example has it,
    and the label check then reports ids up to it, which the files do not show.
    """
    if not Path(directory).is_dir():
        return
    empty = [f for f in class_folders(directory)
             if not _holds(directory / f, formats, follow_links)]
    if empty:
        shown = ", ".join(map(repr, empty[:5])) + (", ..." if len(empty) > 5 else "")
        raise ConfigError.single(
            at + ("path",),
            f"{directory} has class folder(s) {shown} holding no {'/'.join(formats)} file: "
            "Keras would count each as a class with no examples; remove the folder or add "
            "its files")
