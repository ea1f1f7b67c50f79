"""The one place kexp imports TensorFlow and Keras.

Importing TensorFlow costs seconds, so only modules that really need it import this one, and
the CLI imports those lazily inside commands: ``kexp --help`` and schema checks stay fast.
TensorFlow's C++ start-up chatter (failed CUDA probing on a CPU machine, CPU feature notes)
is silenced unless the user has set ``TF_CPP_MIN_LOG_LEVEL`` themselves; warnings and errors
from the import still reach the user.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator

_USER_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

#: TensorFlow's INFO lines (``I0000 00:00:... port.cc:153] oneDNN ...``) and absl's notice
#: that precedes them. TF 2.19+ prints them at import whatever TF_CPP_MIN_LOG_LEVEL says
#: (tensorflow/tensorflow#100442), so they are filtered here instead.
_CHATTER = re.compile(r"^(I\d{4} |WARNING: All log messages before absl::InitializeLog)")


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Hold back what C++ writes to file descriptor 2 during the block; afterwards pass on
    everything but INFO chatter (warnings and errors still reach the user, and all of it
    does when the import fails)."""
    if _USER_LOG_LEVEL:  # the user chose a log level: show what TF shows
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as held:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            kept = lines if failed else [line for line in lines if not _CHATTER.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


with _quiet_stderr():
    import tensorflow as tf  # noqa: E402
    import keras  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise RuntimeError(
        f"kexp runs Keras on TensorFlow, but KERAS_BACKEND is '{keras.backend.backend()}'"
    )

__all__ = ["keras", "tf"]
