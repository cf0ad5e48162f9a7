"""The Prometheus exposition (``GET /metrics`` on the control API).

Nothing here runs per request: the counters live where their events happen (the executor's
``Metrics``, the MQ consumers', timers', builder's and async invocations' ``Tally``) and this
collector turns them into Prometheus families when scraped. The counters are copied on the
event loop, where they are counted (``FissileCollector.take``); what must touch a database (async
invocations by status, the embedded broker's lag) is read in a thread, and so is the text
written.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

import fissile
from fissile.invocations.records import Status
from fissile.observability.metrics import DURATION_BUCKETS, FunctionMetrics, Histogram

if TYPE_CHECKING:
    from fissile.builder import Builder
    from fissile.executor import Executor
    from fissile.invocations import Invocations
    from fissile.triggers.mq.consumer import ConsumerManager
    from fissile.triggers.mq.hub import BrokerHub
    from fissile.triggers.timer import TimerService

__all__ = ["CONTENT_TYPE", "Exposition", "FissileCollector", "Sources"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

INSTANCE_STATES = ("ready", "busy", "starting", "draining")


@dataclass
class Sources:
    """Where the counts are. ``requests``: whether the router counts requests (``fissile up
    --no-metrics`` turns that off); without it the request families are left out, the rest is
    served."""

    executor: Executor
    requests: bool = True
    invocations: Invocations | None = None
    consumers: ConsumerManager | None = None
    brokers: BrokerHub | None = None
    timers: TimerService | None = None
    builder: Builder | None = None
    node: str | None = None  # in a cluster, this node's name: ``fissile_node_info``


class _Function(NamedTuple):
    """A function's counters at one instant (``FunctionMetrics``, copied)."""

    name: str
    requests: dict[int, int]
    duration: tuple[list[int], float]  # non-cumulative bucket counts, sum
    queue_wait: tuple[list[int], float]
    cold_starts: int
    crashes: dict[str, int]
    timeouts: int
    rejected: dict[str, int]
    crash_storms: int


@dataclass
class Snapshot:
    """What one scrape exposes, copied out of the live counters on the event loop (cheap: a
    few µs per function) so that the families can be built and written in a thread."""

    functions: list[_Function] = field(default_factory=list)
    # (function, ready, busy, starting, draining, queued)
    pools: list[tuple[str, int, int, int, int, int]] = field(default_factory=list)
    invocations: dict[tuple[str, str], int] | None = None
    attempts: list[tuple[tuple[str, ...], int]] | None = None
    mq: list[tuple[tuple[str, ...], int]] | None = None
    lag: dict[str, int] = field(default_factory=dict)
    fires: list[tuple[tuple[str, ...], int]] | None = None
    next_fires: list[tuple[str, float]] = field(default_factory=list)
    builds: list[tuple[tuple[str, ...], int]] | None = None
    build_durations: list[tuple[str, Histogram]] = field(default_factory=list)


class FissileCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        self.snapshot = Snapshot()

    async def refresh(self) -> None:
        """Take the snapshot the next ``collect`` exposes."""
        snapshot = self.take()
        sources = self.sources
        if sources.invocations is not None:
            snapshot.invocations = await asyncio.to_thread(sources.invocations.store.census)
        snapshot.lag = await self._lag()
        self.snapshot = snapshot

    def take(self) -> Snapshot:
        """The live counters, copied (on the event loop, where they are counted)."""
        sources = self.sources
        snapshot = Snapshot(
            functions=[_copy(m) for m in sources.executor.metrics.functions.values()]
        )
        for name, pool in sources.executor.functions.items():
            busy = sum(1 for instance in pool.instances if instance.inflight)
            snapshot.pools.append(
                (
                    name,
                    len(pool.instances) - busy,
                    busy,
                    pool.starting,
                    len(pool.draining),
                    len(pool.waiters),
                )
            )
        if sources.invocations is not None:
            snapshot.attempts = list(sources.invocations.attempts)
        if sources.consumers is not None:
            snapshot.mq = list(sources.consumers.outcomes)
        if sources.timers is not None:
            snapshot.fires = list(sources.timers.fires)
            snapshot.next_fires = [
                (name, timer.next_fire.timestamp())
                for name, timer in sources.timers.timers.items()
                if timer.next_fire is not None
            ]
        if sources.builder is not None:
            snapshot.builds = list(sources.builder.outcomes)
            snapshot.build_durations = [
                (env, histogram.copy()) for env, histogram in sources.builder.durations.items()
            ]
        return snapshot

    async def _lag(self) -> dict[str, int]:
        """Unacked messages per MQ trigger, where the broker tells it cheaply: the embedded
        broker only (docs/observability.md)."""
        consumers, hub = self.sources.consumers, self.sources.brokers
        if consumers is None or hub is None:
            return {}
        from fissile.triggers.mq.consumer import group_of
        from fissile.triggers.mq.embedded import EmbeddedBroker

        wanted = [
            (name, c.spec.topic, group_of(name))
            for name, c in consumers.consumers.items()
            if c.spec.mqtype == "embedded"
        ]
        if not wanted:
            return {}
        broker = await hub.get("embedded")
        if not isinstance(broker, EmbeddedBroker):
            return {}

        def read() -> dict[str, int]:
            found: dict[str, int] = {}
            for name, topic, group in wanted:
                lag = broker.lag(topic, group)
                if lag is not None:
                    found[name] = lag
            return found

        return await asyncio.to_thread(read)

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        info = InfoMetricFamily("fissile", "The fissile platform serving these metrics.")
        info.add_metric([], {"version": fissile.__version__})
        yield info
        if self.sources.node is not None:
            # One scrape target per node; this names the node behind Prometheus' ``instance``.
            node = GaugeMetricFamily(
                "fissile_node_info", "The cluster node serving these metrics.", labels=["node"]
            )
            node.add_metric([self.sources.node], 1)
            yield node
        yield from self._functions(snapshot)
        yield from self._invocations(snapshot)
        yield from self._triggers(snapshot)
        yield from self._builds(snapshot)

    def _functions(self, snapshot: Snapshot) -> Iterator[Metric]:
        functions = snapshot.functions
        if self.sources.requests:
            requests = CounterMetricFamily(
                "fissile_function_requests",
                "Requests answered, by function and HTTP status.",
                labels=["function", "code"],
            )
            duration = _histogram(
                "fissile_function_duration_seconds",
                "From a request's arrival to its response's head.",
            )
            queue_wait = _histogram(
                "fissile_function_queue_wait_seconds",
                "Time requests waited for an instance with room.",
            )
            cold_starts = CounterMetricFamily(
                "fissile_function_cold_starts",
                "Requests that waited for a new instance to be made.",
                labels=["function"],
            )
            for m in functions:
                for status, count in m.requests.items():
                    requests.add_metric([m.name, str(status)], count)
                _observe(duration, m.name, m.duration)
                _observe(queue_wait, m.name, m.queue_wait)
                cold_starts.add_metric([m.name], m.cold_starts)
            yield from (requests, duration, queue_wait, cold_starts)
        crashes = CounterMetricFamily(
            "fissile_function_crashes",
            "Instances that died unexpectedly, and failed starts, by kind.",
            labels=["function", "reason"],
        )
        timeouts = CounterMetricFamily(
            "fissile_function_timeouts",
            "Requests that overran the function's timeout (their instance was killed).",
            labels=["function"],
        )
        rejected = CounterMetricFamily(
            "fissile_function_rejected",
            "Requests refused without running: overloaded, queue_timeout, crash_loop.",
            labels=["function", "reason"],
        )
        storms = CounterMetricFamily(
            "fissile_function_crash_storms",
            "Crash storms: many instances dying while serving within a minute (each one is"
            " replaced at once, without back-off).",
            labels=["function"],
        )
        for m in functions:
            for reason, count in m.crashes.items():
                crashes.add_metric([m.name, reason], count)
            timeouts.add_metric([m.name], m.timeouts)
            for reason, count in m.rejected.items():
                rejected.add_metric([m.name, reason], count)
            storms.add_metric([m.name], m.crash_storms)
        yield from (crashes, timeouts, rejected, storms)

        instances = GaugeMetricFamily(
            "fissile_function_instances",
            "Instances of each function by state (busy: at least one request in flight).",
            labels=["function", "state"],
        )
        queued = GaugeMetricFamily(
            "fissile_function_queued",
            "Requests waiting in the function's queue for an instance.",
            labels=["function"],
        )
        for name, *counts, waiting in snapshot.pools:
            for state, count in zip(INSTANCE_STATES, counts, strict=True):
                instances.add_metric([name, state], count)
            queued.add_metric([name], waiting)
        yield from (instances, queued)

    def _invocations(self, snapshot: Snapshot) -> Iterator[Metric]:
        if snapshot.attempts is None:
            return
        current = GaugeMetricFamily(
            "fissile_invocations",
            "Asynchronous invocations kept (within the retention), by function and status.",
            labels=["function", "status"],
        )
        census = snapshot.invocations or {}
        for function in sorted({function for function, _ in census}):
            for status in Status:
                current.add_metric([function, str(status)], census.get((function, status), 0))
        yield current
        yield _tally(
            "fissile_invocation_attempts",
            "Attempts of asynchronous invocations that ran, by outcome.",
            ["function", "outcome"],
            snapshot.attempts,
        )

    def _triggers(self, snapshot: Snapshot) -> Iterator[Metric]:
        if snapshot.mq is not None:
            yield _tally(
                "fissile_mq_messages",
                "Messages handled by MQ triggers: succeeded, retried (an attempt failed),"
                " dead_lettered (sent to the error topic), dropped (failed, no error topic).",
                ["trigger", "outcome"],
                snapshot.mq,
            )
            lag = GaugeMetricFamily(
                "fissile_mq_lag",
                "Messages of the trigger's topic its consumer group has not acked (embedded"
                " broker only).",
                labels=["trigger"],
            )
            for name, count in sorted(snapshot.lag.items()):
                lag.add_metric([name], count)
            yield lag
        if snapshot.fires is not None:
            yield _tally(
                "fissile_timer_fires",
                "Timer slots: succeeded, failed (the call failed or answered >= 400), skipped"
                " (the disk was full).",
                ["trigger", "outcome"],
                snapshot.fires,
            )
            upcoming = GaugeMetricFamily(
                "fissile_timer_next_fire_timestamp_seconds",
                "When each timer fires next (Unix time).",
                labels=["trigger"],
            )
            for name, timestamp in snapshot.next_fires:
                upcoming.add_metric([name], timestamp)
            yield upcoming

    def _builds(self, snapshot: Snapshot) -> Iterator[Metric]:
        if snapshot.builds is None:
            return
        yield _tally(
            "fissile_builds",
            "Package builds: succeeded, failed, cancelled (superseded or deleted), reused.",
            ["environment", "outcome"],
            snapshot.builds,
        )
        durations = _histogram(
            "fissile_build_duration_seconds",
            "How long package builds that ran took (not those reused).",
            label="environment",
        )
        for env, histogram in snapshot.build_durations:
            _observe(durations, env, (histogram.counts, histogram.sum), histogram.bounds)
        yield durations


class Exposition:
    """A registry of its own (not prometheus-client's global one) holding fissile's families and
    the supervisor's process and Python metrics."""

    def __init__(self, sources: Sources) -> None:
        self.collector = FissileCollector(sources)
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

        # One scrape at a time: each takes the snapshot the next collection writes.
        self._scraping = asyncio.Lock()

    async def render(self) -> bytes:
        """Copy the counters on the event loop, then build and write the text in a thread:
        prometheus-client spends ~10 µs per sample (a 1,000-function platform has ~50,000),
        which must not stall the router's loop."""
        async with self._scraping:
            await self.collector.refresh()
            return await asyncio.to_thread(generate_latest, self.registry)


def _histogram(name: str, documentation: str, label: str = "function") -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, labels=[label])


def _observe(
    family: HistogramMetricFamily,
    label: str,
    histogram: tuple[list[int], float],
    bounds: tuple[float, ...] = DURATION_BUCKETS,
) -> None:
    counts, total = histogram
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip((*bounds, math.inf), counts, strict=True):
        cumulative += count
        buckets.append((_le(bound), cumulative))
    family.add_metric([label], buckets, total)


def _tally(
    name: str, documentation: str, labels: list[str], counts: Iterable[tuple[tuple[str, ...], int]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for values, count in counts:
        family.add_metric(list(values), count)
    return family


def _copy(m: FunctionMetrics) -> _Function:
    return _Function(
        m.name,
        m.requests.copy(),
        (m.duration.counts.copy(), m.duration.sum),
        (m.queue_wait.counts.copy(), m.queue_wait.sum),
        m.cold_starts,
        m.crashes.copy(),
        m.timeouts,
        m.rejected.copy(),
        m.crash_storms,
    )


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)
