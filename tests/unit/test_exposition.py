import asyncio
import math
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import fissile
from fissile.observability.exposition import Exposition, Sources
from fissile.observability.metrics import DURATION_BUCKETS, Histogram, Metrics
from fissile.observability.tally import Tally
from fissile.triggers.mq.embedded import EmbeddedBroker


def _instance(inflight: int) -> Any:
    return SimpleNamespace(inflight=inflight)


def _executor() -> Any:
    metrics = Metrics()
    hello = metrics.function("hello")
    for status, seconds in ((200, 0.0004), (200, 0.003), (404, 0.2), (500, 7.0)):
        hello.request(status, seconds)
    hello.queue_wait.observe(0.05)
    hello.cold_starts = 1
    hello.crashed("signal")
    hello.crashed("load_failed")
    hello.timeouts = 2
    hello.refused("overloaded")
    hello.crash_storms = 1
    metrics.function("quiet")
    pool = SimpleNamespace(
        instances=[_instance(0), _instance(3), _instance(1)],
        starting=1,
        draining=[_instance(1)],
        waiters=[object(), object()],
    )
    return SimpleNamespace(metrics=metrics, functions={"hello": pool})


def _scrape(sources: Sources) -> dict[str, Any]:
    text = asyncio.run(Exposition(sources).render()).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _samples(family: Any, name: str | None = None) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in family.samples
        if name is None or s.name == name
    }


def test_function_families_carry_their_names_labels_and_counts() -> None:
    families = _scrape(Sources(_executor()))
    requests = _samples(families["fissile_function_requests"], "fissile_function_requests_total")
    assert requests == {
        (("code", "200"), ("function", "hello")): 2,
        (("code", "404"), ("function", "hello")): 1,
        (("code", "500"), ("function", "hello")): 1,
    }
    assert families["fissile_function_requests"].type == "counter"
    cold = _samples(families["fissile_function_cold_starts"], "fissile_function_cold_starts_total")
    assert cold == {(("function", "hello"),): 1, (("function", "quiet"),): 0}
    crashes = _samples(families["fissile_function_crashes"], "fissile_function_crashes_total")
    assert crashes == {
        (("function", "hello"), ("reason", "signal")): 1,
        (("function", "hello"), ("reason", "load_failed")): 1,
    }
    timeouts = _samples(families["fissile_function_timeouts"], "fissile_function_timeouts_total")
    assert timeouts[(("function", "hello"),)] == 2
    rejected = _samples(families["fissile_function_rejected"], "fissile_function_rejected_total")
    assert rejected == {(("function", "hello"), ("reason", "overloaded")): 1}
    storms = _samples(
        families["fissile_function_crash_storms"], "fissile_function_crash_storms_total"
    )
    assert storms == {(("function", "hello"),): 1, (("function", "quiet"),): 0}


def test_instances_are_counted_by_state() -> None:
    families = _scrape(Sources(_executor()))
    instances = families["fissile_function_instances"]
    assert instances.type == "gauge"
    assert _samples(instances) == {
        (("function", "hello"), ("state", "ready")): 1,
        (("function", "hello"), ("state", "busy")): 2,
        (("function", "hello"), ("state", "starting")): 1,
        (("function", "hello"), ("state", "draining")): 1,
    }
    assert _samples(families["fissile_function_queued"]) == {(("function", "hello"),): 2}


def _buckets(family: Any, label: str) -> list[Sample]:
    return [
        s
        for s in family.samples
        if s.name.endswith("_bucket") and s.labels.get("function") == label
    ]


def test_histograms_are_cumulative_and_agree_with_count_and_sum() -> None:
    families = _scrape(Sources(_executor()))
    duration = families["fissile_function_duration_seconds"]
    assert duration.type == "histogram"
    buckets = _buckets(duration, "hello")
    bounds = [float(s.labels["le"]) for s in buckets]
    assert bounds == [*DURATION_BUCKETS, math.inf]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)  # cumulative: never decreasing
    by_bound = dict(zip(bounds, counts, strict=True))
    assert by_bound[0.0005] == 1 and by_bound[0.005] == 2 and by_bound[0.25] == 3
    assert by_bound[5.0] == 3 and by_bound[10.0] == 4
    samples = {(s.name, s.labels.get("function")): s.value for s in duration.samples}
    assert samples[("fissile_function_duration_seconds_count", "hello")] == counts[-1] == 4
    assert math.isclose(samples[("fissile_function_duration_seconds_sum", "hello")], 7.2034)
    # A function without requests still has its (empty) series.
    assert samples[("fissile_function_duration_seconds_count", "quiet")] == 0
    wait = families["fissile_function_queue_wait_seconds"]
    assert [s.value for s in _buckets(wait, "hello")][-1] == 1


def test_without_request_counting_the_other_families_are_still_served() -> None:
    families = _scrape(Sources(_executor(), requests=False))
    for absent in (
        "fissile_function_requests",
        "fissile_function_duration_seconds",
        "fissile_function_queue_wait_seconds",
        "fissile_function_cold_starts",
    ):
        assert absent not in families
    for present in (
        "fissile_info",
        "fissile_function_crashes",
        "fissile_function_timeouts",
        "fissile_function_instances",
    ):
        assert present in families


def test_info_and_the_supervisors_process_metrics_are_there() -> None:
    families = _scrape(Sources(_executor()))
    info = families["fissile_info"]  # the text format has no info type: a gauge of 1
    assert info.samples[0].value == 1
    assert info.samples[0].labels == {"version": fissile.__version__}
    assert "process_cpu_seconds" in families
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert "python_info" in families


def test_a_cluster_node_names_itself_and_a_single_node_does_not() -> None:
    # One scrape target per node: fissile_node_info says which node a target is.
    families = _scrape(Sources(_executor(), node="n2"))
    (sample,) = families["fissile_node_info"].samples
    assert (sample.labels, sample.value) == ({"node": "n2"}, 1)
    assert "fissile_node_info" not in _scrape(Sources(_executor()))


def _tally(*events: tuple[str, ...]) -> Tally:
    tally = Tally()
    for labels in events:
        tally.add(*labels)
    return tally


def test_invocations_triggers_and_builds(tmp_path: Path) -> None:
    census = {("hello", "succeeded"): 3, ("hello", "queued"): 1}
    invocations: Any = SimpleNamespace(
        store=SimpleNamespace(census=lambda: census),
        attempts=_tally(("hello", "succeeded"), ("hello", "failed"), ("hello", "succeeded")),
    )
    broker = EmbeddedBroker(str(tmp_path / "mq.db"))

    async def get(mqtype: str, url: str | None = None) -> EmbeddedBroker:
        return broker

    consumers: Any = SimpleNamespace(
        consumers={
            "orders": SimpleNamespace(spec=SimpleNamespace(mqtype="embedded", topic="in")),
            "remote": SimpleNamespace(spec=SimpleNamespace(mqtype="redis", topic="in")),
        },
        outcomes=_tally(("orders", "succeeded"), ("orders", "retried"), ("orders", "retried")),
    )
    next_fire = datetime(2030, 1, 1, tzinfo=UTC)
    timers: Any = SimpleNamespace(
        timers={"nightly": SimpleNamespace(next_fire=next_fire)},
        fires=_tally(("nightly", "succeeded"), ("nightly", "failed")),
    )
    durations = Histogram((1.0, 10.0))
    durations.observe(2.0)
    builder: Any = SimpleNamespace(
        outcomes=_tally(("python", "succeeded"), ("python", "reused")),
        durations={"python": durations},
    )
    sources = Sources(
        _executor(),
        invocations=invocations,
        consumers=consumers,
        brokers=SimpleNamespace(get=get),  # type: ignore[arg-type]
        timers=timers,
        builder=builder,
    )

    async def scrape() -> str:
        await broker.start()
        subscription = await broker.subscribe("in", "fissile-orders")
        for body in (b"1", b"2", b"3"):
            await broker.publish("in", body)
        taken = await subscription.fetch(1, 0)
        await taken[0].ack()
        await subscription.fetch(1, 0)  # handed out, not acked: still lagging
        try:
            return (await Exposition(sources).render()).decode()
        finally:
            await broker.close()

    families = {f.name: f for f in text_string_to_metric_families(asyncio.run(scrape()))}
    current = _samples(families["fissile_invocations"])
    assert current[(("function", "hello"), ("status", "succeeded"))] == 3
    assert current[(("function", "hello"), ("status", "queued"))] == 1
    assert current[(("function", "hello"), ("status", "dead"))] == 0
    attempts = _samples(
        families["fissile_invocation_attempts"], "fissile_invocation_attempts_total"
    )
    assert attempts == {
        (("function", "hello"), ("outcome", "succeeded")): 2,
        (("function", "hello"), ("outcome", "failed")): 1,
    }
    messages = _samples(families["fissile_mq_messages"], "fissile_mq_messages_total")
    assert messages == {
        (("outcome", "succeeded"), ("trigger", "orders")): 1,
        (("outcome", "retried"), ("trigger", "orders")): 2,
    }
    assert _samples(families["fissile_mq_lag"]) == {(("trigger", "orders"),): 2}
    fires = _samples(families["fissile_timer_fires"], "fissile_timer_fires_total")
    assert fires[(("outcome", "failed"), ("trigger", "nightly"))] == 1
    upcoming = _samples(families["fissile_timer_next_fire_timestamp_seconds"])
    assert upcoming == {(("trigger", "nightly"),): next_fire.timestamp()}
    builds = _samples(families["fissile_builds"], "fissile_builds_total")
    assert builds[(("environment", "python"), ("outcome", "reused"))] == 1
    build_time = {
        (s.name, s.labels.get("le")): s.value
        for s in families["fissile_build_duration_seconds"].samples
    }
    assert build_time[("fissile_build_duration_seconds_bucket", "1.0")] == 0
    assert build_time[("fissile_build_duration_seconds_bucket", "10.0")] == 1
    assert build_time[("fissile_build_duration_seconds_count", None)] == 1


def test_a_tally_forgets_an_owners_series() -> None:
    tally = _tally(("a", "x"), ("a", "y"), ("b", "x"))
    tally.forget("a")
    assert dict(tally) == {("b", "x"): 1}
    assert tally.get("a", "x") == 0


def test_an_instance_that_dropped_a_request_is_its_own_crash_reason() -> None:
    from fissile.observability.metrics import crash_reason

    assert crash_reason("closed the connection mid-response") == "dropped_request"
