"""A token bucket on one instance's output, in lines and in bytes per second: what a function
prints past it is dropped and counted, so a flood costs the supervisor a pipe read and a
``bytes.count`` per 64 KiB instead of a timestamped log line per line."""

from __future__ import annotations

import time
from collections.abc import Callable


class OutputLimit:
    def __init__(
        self,
        lines_per_second: float,
        bytes_per_second: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lines_per_second = lines_per_second
        self.bytes_per_second = bytes_per_second
        self._clock = clock
        # Full buckets: a second's worth may come at once.
        self._lines = lines_per_second
        self._bytes = bytes_per_second
        self._stamp = clock()
        self.dropped_lines = 0
        self.dropped_bytes = 0

    def refill(self) -> None:
        """Add what the time since the last refill earned (called once per read, not per
        line: the clock is the costly part)."""
        now = self._clock()
        elapsed = now - self._stamp
        self._stamp = now
        self._lines = min(self.lines_per_second, self._lines + elapsed * self.lines_per_second)
        self._bytes = min(self.bytes_per_second, self._bytes + elapsed * self.bytes_per_second)

    def admit(self, size: int) -> bool:
        """Whether a line of ``size`` bytes may be written (and if so, pay for it)."""
        if self._lines < 1 or self._bytes < size:
            return False
        self._lines -= 1
        self._bytes -= size
        return True

    def drop(self, lines: int, size: int) -> None:
        self.dropped_lines += lines
        self.dropped_bytes += size

    def note(self) -> str | None:
        """What was dropped since the last note, for the log (None if nothing), and start
        counting afresh."""
        if not self.dropped_lines and not self.dropped_bytes:
            return None
        text = (
            f"[fissile] dropped {self.dropped_lines} lines ({self.dropped_bytes} bytes) of output:"
            f" rate limit {self.lines_per_second:g} lines/s, {_size(self.bytes_per_second)}/s"
        )
        self.dropped_lines = self.dropped_bytes = 0
        return text


def _size(value: float) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:g} {unit}"
    return f"{value:g} bytes"
