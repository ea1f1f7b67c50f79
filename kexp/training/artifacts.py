"""Write run artifacts so that a kill at any moment never leaves a truncated file.

Every file is written to a temporary name in the same directory and then renamed into place
with ``os.replace``, which is atomic on POSIX and Windows: a file under its final name is
always complete (the old version or the new one, never half of each).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Temporary files start with this (and a dot): never a final artifact name, and found by
#: :func:`remove_stale_temporaries` after a kill.
TMP_MARKER = ".tmp"


@contextmanager
def atomic_path(final: Path, suffix: str | None = None) -> Iterator[Path]:
    """A temporary path next to ``final`` that is renamed to it on success.

    The temporary name ends with ``suffix`` (default: ``final``'s suffix), since savers pick
    the format from it (Keras wants ``.weights.h5`` for weights files). The rename is what
    makes a kill harmless; text files are also flushed to disk before it (:func:`write_text`),
    model and state files are not (an ``fsync`` per save costs more than the save itself on
    small models, and it only matters for an operating-system crash).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=final.parent, prefix=f".{final.stem}.",
        suffix=f"{TMP_MARKER}{final.suffix if suffix is None else suffix}",
    )
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; final files follow the umask
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temporary files a killed writer left in ``directory`` (not recursive).

    They are dot-files with :data:`TMP_MARKER` in their name, never a final artifact, so
    removing them loses nothing; a run directory being resumed is cleaned this way.
    """
    removed = []
    for path in Path(directory).glob(f".*{TMP_MARKER}*"):
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed


def write_text(final: Path, text: str) -> None:
    """Atomically write a text file."""
    with atomic_path(final) as tmp:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def write_json(final: Path, data: Any) -> None:
    """Atomically write JSON (indented, keys in insertion order)."""
    write_text(final, json.dumps(data, indent=2, default=str) + "\n")


def save_model(model: Any, final: Path) -> None:
    """``model.save`` (``.keras`` or ``.h5`` by suffix) through a temporary file.

    The temporary name keeps the suffix, since Keras picks the format from it; for ``.h5``
    Keras 3 uses its legacy HDF5 writer, which stores the optimizer state too.
    """
    with atomic_path(final) as tmp:
        tmp.unlink()  # Keras refuses to write over an existing .keras file without asking
        if final.suffix == ".h5":
            # Keras 3 warns that HDF5 is legacy on every save; kexp writes it on purpose.
            with quiet_absl():
                model.save(str(tmp))
        else:
            model.save(str(tmp))
    keep_keras_save_cache()


def copy_file(source: Path, final: Path) -> None:
    """Copy ``source`` to ``final`` through a temporary file (a checkpoint that is the same
    model as one just saved: copying its bytes costs a fraction of saving it again)."""
    with atomic_path(final) as tmp:
        shutil.copyfile(source, tmp)


#: Where Keras' saver looks up, and where it stores, the attribute names it skips per kind of
#: object (``keras.src.saving.saving_lib.get_attr_skipset``).
_SKIPSET_READ, _SKIPSET_WRITTEN = "saving_attr_skiplist_", "saving_attr_skipset_"


def keep_keras_save_cache() -> None:
    """Make Keras' saver find the attribute names it computed at the previous save.

    Keras caches them per kind of object (layer, optimizer, metric, ...), but reads the
    cache under another key than it writes it (Keras 3.15), so every ``model.save`` and
    ``save_weights`` builds a reference ``Layer``, ``Optimizer``, ``Metric``, ... again to
    list their attributes: a third of the CPU time of saving a small model, paid at every
    epoch by the checkpoints. The names depend only on Keras' classes; storing what Keras
    computed under the key it reads makes its cache work. (A Keras that reads the key it
    writes, or no longer has this cache, is left alone: then there is nothing to copy.)
    """
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - another Keras layout: nothing to share
        return
    stored = vars(global_state.GLOBAL_STATE_TRACKER)
    for key, value in list(stored.items()):
        if key.startswith(_SKIPSET_WRITTEN) and value is not None:
            stored.setdefault(_SKIPSET_READ + key[len(_SKIPSET_WRITTEN):], value)


def save_final_models(model: Any, run_dir: Path, formats: Iterable[str]) -> dict[str, str]:
    """Save ``model.<fmt>`` for each format; the files that could not be written, and why.

    Called once training has finished: a failure to write one format (a full disk, a layer
    the legacy HDF5 writer cannot store) must not cost the run its other files, its test
    evaluation and its manifest, so it is collected here rather than raised. The caller
    records it (status ``incomplete``). A failed file never exists under its final name,
    because every save goes through :func:`atomic_path`.
    """
    missing: dict[str, str] = {}
    for fmt in formats:
        final = Path(run_dir) / f"model.{fmt}"
        try:
            save_model(model, final)
        except Exception as exc:  # anything a writer may raise; KeyboardInterrupt passes
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            missing[final.name] = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return missing


@contextmanager
def quiet_absl() -> Iterator[None]:
    import logging

    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
