"""How much of the machine's memory the data may take.

One rule decides both whether a csv file is read whole or streamed
(:mod:`kexp.data.sources.csv`) and whether a streamed split is cached in memory
(:mod:`kexp.data.pipeline`): at most an eighth of the machine's physical memory, so that the
model, its optimizer state, the shuffle buffer, TensorFlow itself and the other splits still
fit beside it. No TensorFlow import: the csv reader uses this too.

    >>> budget(memory=16 * 2**30) == 2 * 2**30
    True
"""

from __future__ import annotations

import os

#: The share of physical memory one split's data may take (1/8).
SHARE = 8

#: Assumed when the platform does not say how much memory it has (sysconf unavailable).
FALLBACK_MEMORY = 8 << 30


def machine_memory() -> int:
    """Memory in bytes this process may use: the machine's physical memory, or the cgroup
    limit of the container it runs in when that is lower (sysconf reports the host's memory
    inside a container); ``FALLBACK_MEMORY`` when the platform does not tell."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = FALLBACK_MEMORY
    limit = cgroup_limit()
    return min(memory, limit) if limit else memory


#: Where cgroup v2 and v1 put a container's memory limit.
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def cgroup_limit(files: tuple[str, ...] = CGROUP_LIMITS) -> int | None:
    """The container's memory limit in bytes, or None when there is none (``max``, absent)."""
    for file in files:
        try:
            with open(file) as handle:
                text = handle.read().strip()
        except OSError:
            continue
        if text.isdigit():
            return int(text)
    return None


def budget(memory: int | None = None) -> int:
    """Bytes one split's data may take in memory: an eighth of ``memory`` (default: this
    machine's)."""
    return (machine_memory() if memory is None else memory) // SHARE


def size_text(n: float) -> str:
    """``n`` bytes for a message: ``'2.4 GB'``, ``'870 MB'``, ``'66 kB'``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if unit == "GB" else f"{n / scale:.0f} {unit}"
    return f"{n / 1e3:.0f} kB"
