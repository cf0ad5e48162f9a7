"""fissile/router/proxy.py's ``_count``: what one request adds to its function's metrics, the
same as ``FunctionMetrics.request`` and ``Histogram.observe`` would (it inlines them)."""

from __future__ import annotations

import time
from typing import Any

from fissile.observability.metrics import FunctionMetrics, Metrics
from fissile.router.proxy import Trip, _count


class Ready:
    id = "i1"

    def __init__(self, ready_at: float) -> None:
        self.ready_at = ready_at


def counted(*trips: tuple[Trip, int]) -> tuple[FunctionMetrics, FunctionMetrics]:
    executor: Any = type("Executor", (), {"metrics": Metrics()})()
    pool: Any = type("Pool", (), {"metrics": executor.metrics.function("f")})()
    expected = FunctionMetrics("f")
    for trip, status in trips:
        _count(executor, pool, trip, status)
        expected.request(status, trip.duration)
        if trip.waited is not None:
            expected.queue_wait.observe(trip.waited)
            expected.cold_starts += trip.cold
    return pool.metrics, expected


def test_counts_match_the_metrics_own_methods() -> None:
    now = time.monotonic()
    warm = Trip(now - 0.002)
    warm.served(Ready(now - 10), queued=False)
    queued = Trip(now - 0.5)
    queued.served(Ready(now - 10), queued=True)  # waited for a busy instance: not cold
    cold = Trip(now - 2)
    cold.served(Ready(now), queued=True)  # waited for an instance made after it arrived
    refused = Trip(now)  # a crash-loop 503: no instance, no queue wait
    got, expected = counted((warm, 200), (queued, 200), (cold, 500), (refused, 503))
    assert got.requests == expected.requests == {200: 2, 500: 1, 503: 1}
    assert got.duration.counts == expected.duration.counts
    assert got.duration.count == 4
    assert got.queue_wait.counts == expected.queue_wait.counts
    assert got.queue_wait.count == 3 and got.queue_wait.sum == expected.queue_wait.sum
    assert got.cold_starts == expected.cold_starts == 1
    assert cold.cold and not queued.cold and not warm.cold


def test_no_metrics_counts_nothing_but_still_times() -> None:
    executor: Any = type("Executor", (), {"metrics": Metrics()})()
    executor.metrics.enabled = False
    pool: Any = type("Pool", (), {"metrics": executor.metrics.function("f")})()
    trip = Trip(time.monotonic() - 0.01)
    _count(executor, pool, trip, 200)
    assert pool.metrics.requests == {} and trip.duration >= 0.01
