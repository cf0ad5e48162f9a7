"""Requests counted from their access-log records in bulk (``AccessLog.count_into``,
``FunctionMetrics.answered``): the same counts as counting each request, taken in before any
reader sees the metrics."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fissile.observability import access
from fissile.observability.access import AccessLog, Record
from fissile.observability.metrics import FunctionMetrics, Metrics

ENDPOINT = ("fn", "fn-route", "GET", "/fn", "127.0.0.1")


def record(
    status: int = 200,
    duration: float = 0.002,
    waited: float | None = 0.0,
    cold: bool = False,
    endpoint: tuple[str | None, str | None, str, str, str | None] = ENDPOINT,
) -> Record:
    return Record(time.monotonic(), endpoint, status, 5, duration, waited, "i1", cold, 1, None)


def counted_one_by_one(records: list[Record]) -> FunctionMetrics:
    """As the router's ``proxy._count`` counts a request it answered."""
    metrics = FunctionMetrics("fn")
    for record in records:
        status, duration, waited, cold = record.status, record.duration, record.waited, record.cold
        metrics.request(status, duration)
        if waited is not None:
            metrics.queue_wait.observe(waited)
            if waited and cold:
                metrics.cold_starts += 1
    return metrics


def test_a_chunk_counts_as_its_requests_one_by_one(counting: str, tmp_path: Path) -> None:
    rng = random.Random(3)
    records = []
    for _ in range(1000):
        waited = rng.choice([None, 0.0, 0.0, rng.random() * 2])
        records.append(
            record(
                status=rng.choice([200, 200, 201, 404, 429, 500, 502, 503, 504]),
                duration=rng.choice([0.0, 0.0004, 0.0005, rng.random(), rng.random() * 400]),
                waited=waited,
                cold=bool(waited) and rng.random() < 0.3,
            )
        )
    expected = counted_one_by_one(records)
    metrics = Metrics()
    bulk = metrics.function("fn")
    log = AccessLog(tmp_path / "access.log", "json")
    log.metrics = metrics
    for start in range(0, len(records), 128):
        log._count(records[start : start + 128])
    assert bulk.requests == expected.requests
    assert bulk.duration.counts == expected.duration.counts
    assert bulk.duration.count == expected.duration.count == 1000
    assert abs(bulk.duration.sum - expected.duration.sum) < 1e-6
    assert bulk.queue_wait.counts == expected.queue_wait.counts
    assert bulk.queue_wait.count == expected.queue_wait.count
    assert abs(bulk.queue_wait.sum - expected.queue_wait.sum) < 1e-6
    assert bulk.cold_starts == expected.cold_starts > 0


@pytest.fixture(autouse=True, params=["journal", "C chunks", "Python"])
def counting(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test counts record by record in C (``_records.Journal``: json lines in process),
    in chunks in C (``_records.tally``, ``functions``: the text format, or a writer
    process), and in Python (without the extension)."""
    if request.param != "journal":
        monkeypatch.setattr(access, "_Journal", None)
    if request.param == "Python":
        monkeypatch.setattr(access, "_tally", None)
        monkeypatch.setattr(access, "_functions", None)
    elif access._tally is None and os.environ.get("CI") != "true":
        pytest.skip("fissile was installed without its C records module")
    yield request.param


def logged(tmp_path: Path, **options: int) -> tuple[AccessLog, Metrics]:
    metrics = Metrics()
    metrics.function("fn")
    metrics.function("other")
    log = AccessLog(tmp_path / "access.log", "json", interval=60, **options)
    assert log.count_into(metrics)
    return log, metrics


async def test_readers_see_every_record_added_before_they_read(tmp_path: Path) -> None:
    log, metrics = logged(tmp_path, chunk=4, batch=1000)
    for status in (200, 200, 500):
        log.add(record(status))
    # Not packed yet (a chunk is 4): a reader takes them in.
    assert metrics.function("fn").requests == {200: 2, 500: 1}
    log.add(record(404))  # completes a chunk (packed and counted), or counted as added
    assert metrics.function("fn").requests == {200: 2, 500: 1, 404: 1}
    for _ in range(3):
        log.add(record(200))
    functions = metrics.functions
    assert functions["fn"].requests == {200: 5, 500: 1, 404: 1}
    assert functions["fn"].duration.count == 7
    log.close()
    assert metrics.function("fn").requests == {200: 5, 500: 1, 404: 1}  # none twice


async def test_records_of_several_functions_count_apart(tmp_path: Path) -> None:
    log, metrics = logged(tmp_path, chunk=3, batch=1000)
    # A name equal to another but not the same object is the same function.
    other = ("".join(["oth", "er"]), None, "POST", "/o", None)
    nobody = (None, None, "GET", "/nowhere", None)
    for endpoint in (ENDPOINT, other, nobody, other, ENDPOINT, ENDPOINT):
        log.add(record(endpoint=endpoint, waited=None if endpoint is nobody else 0.1, cold=True))
    functions = metrics.functions
    assert functions["fn"].requests == {200: 3} and functions["other"].requests == {200: 2}
    assert functions["fn"].cold_starts == 3 and functions["other"].queue_wait.count == 2
    assert set(functions) == {"fn", "other"}
    log.close()


async def test_records_added_uncounted_are_not_counted(tmp_path: Path) -> None:
    log, metrics = logged(tmp_path, chunk=2, batch=1000)
    log.add(record(200))
    log.add_uncounted(record(401))  # completes a chunk: packed with the first
    log.add_uncounted(record(404))
    log.add(record(500))
    assert metrics.function("fn").requests == {200: 1, 500: 1}
    log.close()
    assert len((tmp_path / "access.log").read_text().splitlines()) == 4


async def test_records_dropped_for_want_of_room_are_still_counted(tmp_path: Path) -> None:
    log, metrics = logged(tmp_path, chunk=100, batch=1000, max_pending=3)
    for _ in range(5):
        log.add(record(200))
    log.add_uncounted(record(404))  # dropped too, and not counted
    assert log.dropped == 3
    assert metrics.function("fn").requests == {200: 5}
    log.close()


async def test_a_deleted_functions_requests_end_in_its_series(tmp_path: Path) -> None:
    log, metrics = logged(tmp_path, chunk=100, batch=1000)
    old = metrics.function("fn")
    log.add(record(200))
    metrics.forget("fn")  # the pending record counts into the series that ends
    assert old.requests == {200: 1}
    log.add(record(200))  # a request in flight when it was deleted: no new series
    assert "fn" not in metrics.functions
    log.close()


def test_a_log_without_a_file_counts_nothing() -> None:
    # Its records are not kept pending: the router counts each request itself.
    log = AccessLog(None, "json")
    assert not log.count_into(Metrics()) and log.metrics is None


async def test_a_read_off_the_loop_leaves_the_counting_to_the_loop(tmp_path: Path) -> None:
    # The loop adds records while a thread might read: only the loop takes them in, so the
    # pending list is never counted from two threads at once.
    log, metrics = logged(tmp_path, chunk=100, batch=1000)
    log.add(record(200))
    in_thread = await asyncio.to_thread(lambda: dict(metrics.functions["fn"].requests))
    assert in_thread == {}
    assert metrics.function("fn").requests == {200: 1}
    log.close()


async def test_closing_from_another_thread_still_counts_what_was_pending(tmp_path: Path) -> None:
    log, metrics = logged(tmp_path, chunk=100, batch=1000)
    log.add(record(500))
    await asyncio.to_thread(log.close)
    assert metrics.function("fn").requests == {500: 1}
