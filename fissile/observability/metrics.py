"""Per-function request metrics, counted where requests end (the router, the invoke API, async
and MQ deliveries) and read by the Prometheus exposition (``/metrics``), ``fissile top`` and the
dashboard.

Plain counters and fixed-bucket histograms, no locks: everything that counts runs on the
supervisor's event loop. prometheus-client's own ``Counter.inc``/``Histogram.observe`` take a
lock and look up a labelled child per call; here the hot path adds to a list slot, and the
exposition turns these into Prometheus families only when scraped (a custom collector).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import repeat
from operator import add, attrgetter, is_not
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fissile.observability.access import Record

# Upper bounds in seconds (Prometheus' ``le``), then +Inf: from a warm call's ~0.3 ms to a
# long function's minutes.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)


class Histogram:
    """Counts per bucket (not cumulative; the last one is +Inf), their sum and count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def add(self, counts: list[int], total: float, count: int) -> None:
        """Observations counted elsewhere: per bucket (as ``counts``), their sum and count."""
        self.counts[:] = map(add, self.counts, counts)
        self.sum += total
        self.count += count

    def observe_all(self, values: Sequence[float]) -> None:
        """``observe`` each of ``values``, in C-level loops (``map``, ``Counter``)."""
        counts = self.counts
        for bucket, n in Counter(map(bisect_left, repeat(self.bounds), values)).items():
            counts[bucket] += n
        self.sum += sum(values)
        self.count += len(values)

    def cumulative(self) -> Iterator[tuple[float, int]]:
        """(upper bound, observations at or below it), +Inf last, as Prometheus exposes."""
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            yield bound, total

    def copy(self) -> Histogram:
        other = Histogram(self.bounds)
        other.counts = self.counts.copy()
        other.sum = self.sum
        other.count = self.count
        return other


class FunctionMetrics:
    """One function's counters since the platform started (or the function was created).

    Kept by name across updates of the function (its pool is replaced, its counts are not)."""

    __slots__ = (
        "cold_starts",
        "crash_storms",
        "crashes",
        "duration",
        "name",
        "queue_wait",
        "rejected",
        "requests",
        "timeouts",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: dict[int, int] = {}  # HTTP status -> requests answered with it
        self.duration = Histogram()  # from the request's arrival to its response's head
        self.queue_wait = Histogram()  # waiting for an instance with room
        self.cold_starts = 0  # requests that waited for a new instance to be made
        self.crashes: dict[str, int] = {}  # reason -> instances that died unexpectedly
        # Times instances died while serving at a storm's rate (FunctionPool._died_serving).
        self.crash_storms = 0
        self.timeouts = 0  # requests that overran the function's timeout
        # reason -> requests refused without running: ``overloaded`` (429, queue full),
        # ``queue_timeout`` (503, no instance in time), ``crash_loop`` (503, backing off)
        self.rejected: dict[str, int] = {}

    def request(self, status: int, duration: float) -> None:
        """One answered request: its status and how long it took."""
        requests = self.requests
        requests[status] = requests.get(status, 0) + 1
        self.duration.observe(duration)

    def crashed(self, reason: str) -> None:
        self.crashes[reason] = self.crashes.get(reason, 0) + 1

    def refused(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def answered(self, records: Sequence[Record]) -> None:
        """Requests the router answered, from their access-log records (``access.Record``:
        status, duration, queue wait, cold), counted together as ``request`` and the router's
        ``proxy._count`` count them one at a time: a record's queue wait None means it was
        refused before it could wait (not observed); its cold flag, that it waited for an
        instance made for it.

        Where the C module is not built (``_records.tally`` does this in ~0.2k instructions a
        record): C-level loops, ~1.5k instructions a record (callgrind), about what counting
        each request on the router's hot path cost, but off it."""
        requests = self.requests
        for status, n in Counter(map(_STATUS, records)).items():
            requests[status] = requests.get(status, 0) + n
        self.duration.observe_all(list(map(_DURATION, records)))
        waits: list[float] = list(filter(_KNOWN, map(_WAITED, records)))
        if waits:
            self.queue_wait.observe_all(waits)
        self.cold_starts += sum(map(_COLD, records))

    def add_tally(
        self,
        statuses: dict[int, int],
        durations: list[int],
        duration_sum: float,
        waits: list[int],
        wait_sum: float,
        wait_count: int,
        cold: int,
    ) -> None:
        """``answered``'s counts, made in C (``_records.tally``)."""
        requests = self.requests
        for status, n in statuses.items():
            requests[status] = requests.get(status, 0) + n
        self.duration.add(durations, duration_sum, sum(statuses.values()))
        if wait_count:
            self.queue_wait.add(waits, wait_sum, wait_count)
        self.cold_starts += cold

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    @property
    def errors(self) -> int:
        return server_errors(self.requests)


# A record's fields (``access.Record``), as ``FunctionMetrics.answered`` reads them.
_STATUS = attrgetter("status")
_DURATION = attrgetter("duration")
_WAITED = attrgetter("waited")
_COLD = attrgetter("cold")
_KNOWN: Callable[[object], bool] = partial(is_not, None)


def server_errors(requests: dict[int, int]) -> int:
    """Requests answered with a 5xx (the function's or the platform's failure), of counts by
    status."""
    return sum(n for status, n in requests.items() if status >= 500)


class Metrics:
    """Every function's ``FunctionMetrics``, by name.

    Some counts arrive in bulk: the router's requests are counted from their access-log
    records a chunk at a time (``access.AccessLog.count_into``), not one by one on its hot
    path. Every read (``functions``, ``function``, ``forget``) first takes in what is waiting
    (``settle``), so a reader never sees a count behind what was answered."""

    def __init__(self) -> None:
        self._functions: dict[str, FunctionMetrics] = {}
        # ``fissile up --no-metrics``: requests are not counted (the router's hot path skips
        # it); the exposition says metrics are off.
        self.enabled = True
        # Counts waiting to be taken in (the access log's pending records), or None.
        self.pending: Callable[[], None] | None = None

    def settle(self) -> None:
        """Take in the counts waiting in bulk."""
        if self.pending is not None:
            self.pending()

    @property
    def functions(self) -> dict[str, FunctionMetrics]:
        """Every function's metrics, by name, with what is waiting taken in."""
        self.settle()
        return self._functions

    def function(self, name: str) -> FunctionMetrics:
        self.settle()
        metrics = self._functions.get(name)
        if metrics is None:
            metrics = self._functions[name] = FunctionMetrics(name)
        return metrics

    def known(self, name: str) -> FunctionMetrics | None:
        """The function's metrics if it has any, without taking in what is waiting (for the
        counting in bulk itself)."""
        return self._functions.get(name)

    def forget(self, name: str) -> None:
        """The function was deleted: its series end (a new function of that name starts at 0).
        Its requests answered before are counted first, into the series that ends."""
        self.settle()
        self._functions.pop(name, None)


def crash_reason(exit_reason: str | None) -> str:
    """A crash's reason as a label of few values: the kind of exit, not its detail (exit
    codes and signal numbers would make a series per value)."""
    if not exit_reason:
        return "exited"
    text = exit_reason.lower()
    for needle, reason in (
        ("mid-response", "dropped_request"),
        ("memory", "oom"),
        ("oom", "oom"),
        ("signal", "signal"),
        ("killed", "signal"),
        ("timeout", "timeout"),
        ("exit", "exited"),
    ):
        if needle in text:
            return reason
    return "other"
