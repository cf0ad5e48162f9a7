"""Live statistics over a recent window: "how busy, how fast, what failed in the last minute".

The counters of ``metrics.py`` only grow. ``Stats`` copies each function's counters every
``interval`` seconds into a ring covering ``HORIZON`` (an hour), and answers a window as the
difference between the live counters and the copy taken at (or just before) its start. Quantiles
come from the difference of two histograms, interpolated within a bucket the way Prometheus'
``histogram_quantile`` does: no per-request samples are kept anywhere.

A copy is kept only when something changed since the last one, so an idle function costs one
entry however long it stays idle. Copies are kept every interval for the last ``FINE_SPAN``
(enough for a 10-minute window to start on time) and one a minute beyond, so a busy function
holds ~180 copies (~120 KB), not 720.
"""

from __future__ import annotations

import asyncio
import re
import time
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fissile.observability.metrics import (
    DURATION_BUCKETS,
    FunctionMetrics,
    Metrics,
    server_errors,
)

INTERVAL = 5.0  # seconds between snapshots
HORIZON = 3600.0  # the longest window asked for
SERIES_SPAN = 300.0  # the sparklines' span
FINE_SPAN = 660.0  # copies younger than this are all kept
COARSE_STEP = 60.0  # older ones, one per minute

_SINCE = re.compile(r"(\d+(?:\.\d+)?)\s*([smh])")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


class BadSince(ValueError):
    """A window that is not ``30s``, ``10m``, ``1h``..., or longer than the ring keeps."""


def parse_since(text: str, horizon: float = HORIZON) -> float:
    """``30s``, ``10m``, ``1h`` (decimals allowed) as seconds, within (0, ``horizon``]."""
    match = _SINCE.fullmatch(text.strip().lower())
    if match is None:
        raise BadSince(f"invalid window {text!r}: give a number and a unit, such as 30s, 10m or 1h")
    seconds = float(match.group(1)) * _UNIT[match.group(2)]
    if not 0 < seconds <= horizon:
        raise BadSince(
            f"invalid window {text!r}: must be above 0 and at most {format_since(horizon)}"
        )
    return seconds


def format_since(seconds: float) -> str:
    """The shortest of ``1h``, ``10m``, ``30s`` that says ``seconds`` exactly."""
    for unit in ("h", "m"):
        count = seconds / _UNIT[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds:g}s"


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The ``q``-quantile of observations counted per bucket (``counts``, not cumulative; the
    last bucket is +Inf, ``bounds`` are the others' upper bounds), linearly interpolated within
    its bucket as Prometheus' ``histogram_quantile`` does. None without observations.

    As there, the first bucket starts at 0 and a quantile falling in the +Inf bucket is the
    highest finite bound: nothing better is known about it."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    below = 0
    for index, count in enumerate(counts):
        if count and below + count >= rank:
            if index >= len(bounds):
                return bounds[-1]
            lower = bounds[index - 1] if index else 0.0
            upper = bounds[index]
            return lower + (upper - lower) * max(rank - below, 0) / count
        below += count
    return bounds[-1]


_ZEROS = array("Q", [0] * (len(DURATION_BUCKETS) + 1))


@dataclass(slots=True)
class Snapshot:
    """One function's cumulative counters at ``time`` (monotonic seconds), and still at
    ``until``, the last sampling that found them unchanged: in between they did not move."""

    time: float
    requests: dict[int, int]
    durations: array[int]  # compact: a list would hold an int object per bucket
    count: int  # requests: the histogram's count
    cold_starts: int
    crashes: int
    until: float

    @classmethod
    def of(cls, metrics: FunctionMetrics, now: float) -> Snapshot:
        return cls(
            now,
            dict(metrics.requests),
            array("Q", metrics.duration.counts),
            metrics.duration.count,
            metrics.cold_starts,
            sum(metrics.crashes.values()),
            now,
        )

    @classmethod
    def zero(cls, now: float) -> Snapshot:
        return cls(now, {}, _ZEROS, 0, 0, 0, now)

    def held(self, moment: float) -> Snapshot:
        """The same counts, as of ``moment`` (between ``time`` and ``until``)."""
        return Snapshot(
            moment,
            self.requests,
            self.durations,
            self.count,
            self.cold_starts,
            self.crashes,
            moment,
        )

    def same_counts(self, metrics: FunctionMetrics) -> bool:
        # Every request adds to the histogram, so its count stands for the status counts.
        return (
            self.count == metrics.duration.count
            and self.cold_starts == metrics.cold_starts
            and self.crashes == sum(metrics.crashes.values())
        )


@dataclass(slots=True, frozen=True)
class Window:
    """What happened between two snapshots."""

    seconds: float
    requests: dict[int, int]
    durations: list[int]
    cold_starts: int
    crashes: int

    @classmethod
    def between(cls, start: Snapshot, end: Snapshot) -> Window:
        statuses = {
            status: count - start.requests.get(status, 0)
            for status, count in end.requests.items()
            if count != start.requests.get(status, 0)
        }
        return cls(
            end.time - start.time,
            statuses,
            [b - a for a, b in zip(start.durations, end.durations, strict=True)],
            end.cold_starts - start.cold_starts,
            end.crashes - start.crashes,
        )

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    @property
    def errors(self) -> int:
        return server_errors(self.requests)

    @property
    def rate(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def quantile_ms(self, q: float) -> float | None:
        value = quantile(q, DURATION_BUCKETS, self.durations)
        return None if value is None else round(value * 1000, 3)

    def to_json(self, since: float) -> dict[str, Any]:
        total = self.total
        return {
            "since": since,
            "window": round(self.seconds, 3),
            "requests": total,
            "rate": round(self.rate, 3),
            "statuses": {str(status): n for status, n in sorted(self.requests.items())},
            "errors": self.errors,
            "error_rate": round(self.errors / total, 4) if total else 0.0,
            "p50_ms": self.quantile_ms(0.5),
            "p99_ms": self.quantile_ms(0.99),
            "cold_starts": self.cold_starts,
            "crashes": self.crashes,
        }


class Ring:
    """One function's snapshots, oldest first: every one of the last ``FINE_SPAN`` in
    ``fine``, one a minute before that in ``coarse``, back to the horizon (plus one older, the
    start of the longest window)."""

    __slots__ = ("born", "coarse", "fine", "interval", "p99", "rates", "source")

    def __init__(
        self, source: FunctionMetrics, now: float, interval: float, series: int = 60
    ) -> None:
        self.source = source  # a function deleted and made again has new metrics: a new ring
        self.born = now  # when the sampler first saw the function
        self.interval = interval
        self.fine: deque[Snapshot] = deque([Snapshot.of(source, now)])
        self.coarse: deque[Snapshot] = deque()
        # Requests per second and p99 (ms) between successive samplings, the last ``series``:
        # computed once as each sampling is taken, whoever reads them and however often.
        self.rates: deque[float] = deque(maxlen=series)
        self.p99: deque[float | None] = deque(maxlen=series)

    def add(self, now: float, horizon: float) -> None:
        fine, coarse = self.fine, self.coarse
        last = fine[-1] if fine else coarse[-1]
        if last.same_counts(self.source):
            # Idle since the last sampling (the common case): nothing to subtract.
            last.until = now
            self.rates.append(0.0)
            self.p99.append(None)
        else:
            snapshot = Snapshot.of(self.source, now)
            window = Window.between(last.held(last.until), snapshot)
            self.rates.append(round(window.rate, 3))
            self.p99.append(window.quantile_ms(0.99))
            fine.append(snapshot)
        while len(fine) > 1 and fine[0].time < now - FINE_SPAN:
            old = fine.popleft()
            # A copy dropped here leaves the coarse one before it, known until its ``until``:
            # a window starting in between starts there, up to a minute early.
            if not coarse or old.time - coarse[-1].time >= COARSE_STEP:
                coarse.append(old)
        while len(coarse) > 1 and coarse[1].time <= now - horizon:
            coarse.popleft()

    def __len__(self) -> int:
        return len(self.fine) + len(self.coarse)

    def at(self, moment: float) -> Snapshot:
        """The counters as last known at or before ``moment``: those of the last snapshot taken
        by then, at ``moment`` itself if they were still unchanged at a later sampling, else at
        the last sampling that saw them (they moved after it: the window starts there, up to an
        interval early, so that what it counts and its length agree). Zero before the first."""
        for snapshots in (self.fine, self.coarse):
            index = bisect_right(snapshots, moment, key=_time)
            if index:
                found = snapshots[index - 1]
                return found.held(min(moment, found.until))
        # Counters start at zero when the function's metrics are made. Seen with none, it was
        # made at most when first seen; seen with some, at most an interval before.
        first = self.coarse[0] if self.coarse else self.fine[0]
        made = self.born if not first.count else self.born - self.interval
        return Snapshot.zero(max(moment, made))


def _time(snapshot: Snapshot) -> float:
    return snapshot.time


Gauges = Callable[[str], dict[str, Any]]


class Stats:
    """Windows and sparkline series for every function of a ``Metrics`` registry.

    ``gauges(name)`` adds the live state of a function (instances, queue) to its answers."""

    def __init__(
        self,
        metrics: Metrics,
        gauges: Gauges | None = None,
        interval: float = INTERVAL,
        horizon: float = HORIZON,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.gauges = gauges
        self.interval = interval
        self.horizon = horizon
        self.clock = clock
        self.steps = max(int(SERIES_SPAN / interval), 1)  # intervals in a series
        self.rings: dict[str, Ring] = {}
        self._task: asyncio.Task[None] | None = None

    # -- sampling -----------------------------------------------------------------------

    def sample(self) -> None:
        """Copy every function's counters (those that moved) into its ring."""
        now = self.clock()
        functions = self.metrics.functions
        rings = self.rings
        for name in [name for name in rings if name not in functions]:
            del rings[name]
        for name, metrics in functions.items():
            ring = rings.get(name)
            if ring is None or ring.source is not metrics:
                rings[name] = Ring(metrics, now, self.interval, self.steps)
            else:
                ring.add(now, self.horizon)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    # -- reading ------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self.metrics.functions)

    def window(self, name: str, since: float) -> Window:
        """``name``'s counts over the last ``since`` seconds (or since it was first seen)."""
        now = self.clock()
        ring = self._ring(name, now)
        return Window.between(ring.at(now - since), Snapshot.of(ring.source, now))

    def _ring(self, name: str, now: float) -> Ring:
        # Asking about a function must not register it (a deleted one would linger).
        metrics = self.metrics.functions.get(name) or FunctionMetrics(name)
        ring = self.rings.get(name)
        if ring is None or ring.source is not metrics:
            ring = self.rings[name] = Ring(metrics, now, self.interval, self.steps)
        return ring

    def function(
        self, name: str, since: float, series: bool = False, buckets: bool = False
    ) -> dict[str, Any]:
        """``name``'s window as the API shows it; ``buckets``: also the window's duration
        histogram (counts per bucket of ``DURATION_BUCKETS``, +Inf last), from which a cluster
        merges the nodes' quantiles (``fissile/cluster/stats.py``)."""
        window = self.window(name, since)
        document = {"function": name, **window.to_json(since)}
        if buckets:
            document["buckets"] = window.durations
        if self.gauges is not None:
            document.update(self.gauges(name))
        if series:
            document["series"] = self.series(name)
        return document

    def all(self, since: float, series: bool = False) -> list[dict[str, Any]]:
        return [self.function(name, since, series) for name in self.names()]

    def series(self, name: str) -> dict[str, Any]:
        """Requests per second and p99 (ms) per sampling interval over the last
        ``SERIES_SPAN``, oldest first, ending at the last sampling; padded with idle intervals
        before the function was first seen."""
        ring = self._ring(name, self.clock())
        missing = self.steps - len(ring.rates)
        return {
            "interval": self.interval,
            "rate": [0.0] * missing + list(ring.rates),
            "p99_ms": [None] * missing + list(ring.p99),
        }


def pool_gauges(functions: Callable[[], dict[str, Any]]) -> Gauges:
    """Live state of a function from the executor's pools (``executor.functions``): its
    instances (ready, busy, starting; each with its pid and state), queue and restarts."""

    def gauges(name: str) -> dict[str, Any]:
        pool = functions().get(name)
        if pool is None:
            return {
                "instances": {"ready": 0, "busy": 0, "idle": 0, "starting": 0, "desired": 0},
                "processes": [],
                "queued": 0,
                "inflight": 0,
                "restarts": 0,
                "last_exit_reason": None,
            }
        status = pool.status()
        now = time.monotonic()
        return {
            "instances": {
                "ready": status.instances,
                "busy": status.busy,
                "idle": status.instances - status.busy,
                "starting": status.starting,
                "desired": status.desired,
            },
            "processes": [
                {
                    "id": instance.id,
                    "pid": instance.pid,
                    "state": instance.state.value,
                    "inflight": instance.inflight,
                    "age_s": round(now - instance.started_at, 1),
                    "idle_s": None if instance.inflight else round(now - instance.last_used, 1),
                }
                for instance in [*pool.instances, *pool.draining]
            ],
            "queued": status.queued,
            "inflight": status.inflight,
            "restarts": status.restarts,
            "last_exit_reason": status.last_exit_reason,
        }

    return gauges
