"""Counts by label values, kept by the component whose events they count (triggers, builds,
async invocations) and read by the Prometheus exposition when scraped.

A dict of ints on the supervisor's event loop, like ``metrics.FunctionMetrics``: no lock, no
per-event call into prometheus-client.
"""

from __future__ import annotations

from collections.abc import Iterator


class Tally:
    """Event counts by a tuple of label values; the first is the owner (a trigger, a function,
    an environment) so that its series can end with it."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], int] = {}

    def add(self, *labels: str) -> None:
        counts = self.counts
        counts[labels] = counts.get(labels, 0) + 1

    def get(self, *labels: str) -> int:
        return self.counts.get(labels, 0)

    def forget(self, owner: str) -> None:
        """``owner`` was deleted: its series end (one made again of that name starts at 0)."""
        for labels in [labels for labels in self.counts if labels[0] == owner]:
            del self.counts[labels]

    def __iter__(self) -> Iterator[tuple[tuple[str, ...], int]]:
        # A copy: the exposition may run between two events that add a key.
        return iter(list(self.counts.items()))
