"""The autoscaler driving real instances: a burst on a cold function, the async default
concurrency, gradual scale-down to zero, and decisions visible in the status and the log."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

from intkit import Harness, until

from fissile.executor.connection import InstanceResponse
from fissile.router.proxy import forward

SLOW = """
import os, time

def main(request):
    time.sleep(float(request.query.get("sleep", "0")))
    return {"pid": os.getpid()}
"""

ASYNC = """
import asyncio, os

async def main(request):
    await asyncio.sleep(float(request.query.get("sleep", "0")))
    return {"pid": os.getpid()}
"""


def request(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\n\r\n".encode()


async def get(harness: Harness, function: str, target: str) -> InstanceResponse:
    pool = harness.executor.function(function)
    response = await forward(harness.executor, pool, request(target))
    assert isinstance(response, InstanceResponse), response.body
    assert response.status == 200, response.body
    return response


async def test_burst_on_a_cold_function_is_served_by_max_scale_instances(
    harness: Harness,
) -> None:
    harness.function("bursty", SLOW, max_scale=8)
    pool = harness.executor.function("bursty")
    responses = await asyncio.gather(*(get(harness, "bursty", "/?sleep=0.2") for _ in range(50)))
    pids = {json.loads(r.body)["pid"] for r in responses}
    assert len(responses) == 50
    assert 2 <= len(pids) <= 8
    assert len(pool.instances) <= 8
    status = harness.executor.status("bursty")
    assert status.desired == 8
    assert (status.queued, status.inflight, status.concurrency) == (0, 0, 1)
    log = (harness.root / "logs" / "functions" / "bursty.log").read_text()
    assert "autoscaler: 0 -> " in log


async def test_async_functions_share_an_instance_by_default(harness: Harness) -> None:
    harness.function("awaits", ASYNC, max_scale=8)
    await get(harness, "awaits", "/")  # the first specialization tells the pool it is async
    pool = harness.executor.function("awaits")
    assert pool.limit == 100
    responses = await asyncio.gather(*(get(harness, "awaits", "/?sleep=0.2") for _ in range(20)))
    assert len({json.loads(r.body)["pid"] for r in responses}) == 1
    assert harness.executor.status("awaits").concurrency == 100


async def test_sync_functions_default_to_one_request_per_instance(harness: Harness) -> None:
    harness.function("one", SLOW, max_scale=3)
    responses = await asyncio.gather(*(get(harness, "one", "/?sleep=0.3") for _ in range(3)))
    assert len({json.loads(r.body)["pid"] for r in responses}) == 3
    assert harness.executor.function("one").limit == 1


async def test_scale_down_is_gradual_then_to_zero(harness: Harness) -> None:
    harness.function("ebb", SLOW, max_scale=4, idle_timeout=1.0)
    pool = harness.executor.function("ebb")
    await asyncio.gather(*(get(harness, "ebb", "/?sleep=0.3") for _ in range(4)))
    assert len(pool.instances) == 4
    seen = [4]
    deadline = time.monotonic() + 15
    while pool.instances and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if len(pool.instances) != seen[-1]:
            seen.append(len(pool.instances))
    assert seen[-1] == 0, seen
    # Not all at once: through at least one intermediate count, never more than half a step.
    assert len(seen) >= 3, seen
    assert all(b >= a // 2 for a, b in itertools.pairwise(seen[:-1])), seen
    log = (harness.root / "logs" / "functions" / "ebb.log").read_text()
    # The last step to zero waits for the idle timeout, then takes every idle instance.
    assert " -> 0 instances (idle " in log, log
    assert harness.executor.status("ebb").restarts == 0


async def test_min_scale_is_kept_through_scale_down(harness: Harness) -> None:
    harness.function("floor", SLOW, max_scale=3, min_scale=1, idle_timeout=0.2)
    pool = harness.executor.function("floor")
    await asyncio.gather(*(get(harness, "floor", "/?sleep=0.3") for _ in range(3)))
    await until(lambda: len(pool.instances) == 1, timeout=10)
    await asyncio.sleep(1.0)
    assert len(pool.instances) == 1
    assert harness.executor.status("floor").desired == 1


async def test_a_function_that_cannot_load_is_not_retried_without_requests(
    harness: Harness,
) -> None:
    harness.function("broken", "raise ImportError('nope')\n", max_scale=4)
    pool = harness.executor.function("broken")
    request = b"GET / HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n"
    answers = await asyncio.gather(*(forward(harness.executor, pool, request) for _ in range(3)))
    assert {a.status for a in answers} == {500}
    await until(lambda: not pool.starting)  # the starts the queue asked for have all failed
    failures = pool.failures
    await asyncio.sleep(1.2)  # two autoscaler ticks
    assert pool.failures == failures
    assert (pool.starting, len(pool.instances)) == (0, 0)


async def test_new_code_relearns_whether_the_function_is_async(harness: Harness) -> None:
    harness.function("turns", SLOW)
    await get(harness, "turns", "/")
    pool = harness.executor.function("turns")
    assert pool.limit == 1
    harness.package("turns-v2", {"fx_turns.py": ASYNC})
    harness.update_function("turns", package="turns-v2")
    await get(harness, "turns", "/")
    assert (pool.is_async, pool.limit) == (True, 100)
