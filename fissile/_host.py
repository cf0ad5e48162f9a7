"""Bounds that follow the host instead of fixed numbers."""

from __future__ import annotations

import functools
import os
from pathlib import Path

# What one warm instance holds of the host, with headroom: ~6 MiB of private memory once
# forked (docs/performance.md) plus its kernel structures, and a few process ids (the instance,
# and threads or children of the function it becomes).
INSTANCE_MEMORY = 16 * 1024 * 1024
INSTANCE_PIDS = 4


@functools.cache
def max_poolsize() -> int:
    """How many warm instances one environment may ask for on this host: one per
    ``INSTANCE_MEMORY`` of its memory and per ``INSTANCE_PIDS`` of its process ids, whichever
    is less (a container's cgroup limits count)."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    memory = min(memory, _limit("/sys/fs/cgroup/memory.max") or memory)
    pids = min(
        _limit("/proc/sys/kernel/pid_max") or 32768,
        _limit("/proc/sys/kernel/threads-max") or 32768,
        _limit("/sys/fs/cgroup/pids.max") or 32768,
    )
    return max(1, min(memory // INSTANCE_MEMORY, pids // INSTANCE_PIDS))


def _limit(path: str) -> int | None:
    """A number from a kernel file; None when it is missing or ``max``."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
