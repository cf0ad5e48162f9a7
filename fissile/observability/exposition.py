"""The Prometheus exposition (``GET /metrics`` on the control API).

Nothing here runs per request: the counters live where their events happen (the executor's
``Metrics``, the MQ consumers', timers', builder's and async invocations' ``Tally``) and this
collector turns them into Prometheus families when scraped. What must touch a database (async
invocations by status, the embedded broker's lag) is read in a thread first (``refresh``); the
rest is read on the event loop, where it is counted.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
from fissile.observability.metrics import Histogram

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


class FissileCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self.sources = sources
        # Read from databases by ``refresh``, in a thread, before each collection.
        self.invocations: dict[tuple[str, str], int] = {}
        self.lag: dict[str, int] = {}

    async def refresh(self) -> None:
        sources = self.sources
        if sources.invocations is not None:
            self.invocations = await asyncio.to_thread(sources.invocations.store.census)
        self.lag = await self._lag()

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
            for name, c in list(consumers.consumers.items())
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
        info = InfoMetricFamily("fissile", "The fissile platform serving these metrics.")
        info.add_metric([], {"version": fissile.__version__})
        yield info
        yield from self._functions()
        yield from self._invocations()
        yield from self._triggers()
        yield from self._builds()

    def _functions(self) -> Iterator[Metric]:
        executor = self.sources.executor
        functions = list(executor.metrics.functions.values())
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
                for status, count in list(m.requests.items()):
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
        for m in functions:
            for reason, count in list(m.crashes.items()):
                crashes.add_metric([m.name, reason], count)
            timeouts.add_metric([m.name], m.timeouts)
            for reason, count in list(m.rejected.items()):
                rejected.add_metric([m.name, reason], count)
        yield from (crashes, timeouts, rejected)

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
        for name, pool in list(executor.functions.items()):
            busy = sum(1 for instance in pool.instances if instance.inflight)
            counts = (len(pool.instances) - busy, busy, pool.starting, len(pool.draining))
            for state, count in zip(INSTANCE_STATES, counts, strict=True):
                instances.add_metric([name, state], count)
            queued.add_metric([name], len(pool.waiters))
        yield from (instances, queued)

    def _invocations(self) -> Iterator[Metric]:
        invocations = self.sources.invocations
        if invocations is None:
            return
        current = GaugeMetricFamily(
            "fissile_invocations",
            "Asynchronous invocations kept (within the retention), by function and status.",
            labels=["function", "status"],
        )
        census = self.invocations
        for function in sorted({function for function, _ in census}):
            for status in Status:
                current.add_metric([function, str(status)], census.get((function, status), 0))
        yield current
        yield _tally(
            "fissile_invocation_attempts",
            "Attempts of asynchronous invocations that ran, by outcome.",
            ["function", "outcome"],
            invocations.attempts,
        )

    def _triggers(self) -> Iterator[Metric]:
        consumers = self.sources.consumers
        if consumers is not None:
            yield _tally(
                "fissile_mq_messages",
                "Messages handled by MQ triggers: succeeded, retried (an attempt failed),"
                " dead_lettered (sent to the error topic), dropped (failed, no error topic).",
                ["trigger", "outcome"],
                consumers.outcomes,
            )
            lag = GaugeMetricFamily(
                "fissile_mq_lag",
                "Messages of the trigger's topic its consumer group has not acked (embedded"
                " broker only).",
                labels=["trigger"],
            )
            for name, count in sorted(self.lag.items()):
                lag.add_metric([name], count)
            yield lag
        timers = self.sources.timers
        if timers is not None:
            yield _tally(
                "fissile_timer_fires",
                "Timer slots: succeeded, failed (the call failed or answered >= 400), skipped"
                " (the disk was full).",
                ["trigger", "outcome"],
                timers.fires,
            )
            upcoming = GaugeMetricFamily(
                "fissile_timer_next_fire_timestamp_seconds",
                "When each timer fires next (Unix time).",
                labels=["trigger"],
            )
            for name, timer in list(timers.timers.items()):
                if timer.next_fire is not None:
                    upcoming.add_metric([name], timer.next_fire.timestamp())
            yield upcoming

    def _builds(self) -> Iterator[Metric]:
        builder = self.sources.builder
        if builder is None:
            return
        yield _tally(
            "fissile_builds",
            "Package builds: succeeded, failed, cancelled (superseded or deleted), reused.",
            ["environment", "outcome"],
            builder.outcomes,
        )
        durations = _histogram(
            "fissile_build_duration_seconds",
            "How long package builds that ran took (not those reused).",
            label="environment",
        )
        for env, histogram in list(builder.durations.items()):
            _observe(durations, env, histogram)
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

    async def render(self) -> bytes:
        await self.collector.refresh()
        return generate_latest(self.registry)


def _histogram(name: str, documentation: str, label: str = "function") -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, labels=[label])


def _observe(family: HistogramMetricFamily, label: str, histogram: Histogram) -> None:
    # Read on the event loop that counts: buckets, count and sum agree with each other.
    buckets = [(_le(bound), count) for bound, count in histogram.cumulative()]
    family.add_metric([label], buckets, histogram.sum)


def _tally(
    name: str, documentation: str, labels: list[str], counts: Iterable[tuple[tuple[str, ...], int]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for values, count in counts:
        family.add_metric(list(values), count)
    return family


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)
