"""Overload is not a crash: the queue's bounds (429 when full, 503 after the queue timeout) and
the function's timeout counted from when an instance starts the request, on both of the
router's paths (``forward_soon``'s callbacks and ``forward``'s coroutine)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from intkit import Harness, pid_alive, until

from fissile.executor.connection import InstanceResponse
from fissile.router.proxy import Answer, forward, forward_soon

CODE = """
import os, time

def main(request):
    time.sleep(float(request.query.get("sleep", "0")))
    return {"pid": os.getpid()}
"""

Send = Callable[[Harness, str, str], Awaitable[Any]]


def http(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\n\r\n".encode()


async def send_forward(harness: Harness, function: str, target: str = "/") -> Any:
    pool = harness.executor.function(function)
    return await forward(harness.executor, pool, http(target))


async def send_soon(harness: Harness, function: str, target: str = "/") -> Any:
    """As the router's protocol does: ``forward_soon``, else ``forward``."""
    pool = harness.executor.function(function)
    outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    if forward_soon(harness.executor, pool, http(target), outcome.set_result):
        return await outcome
    return await forward(harness.executor, pool, http(target))


@pytest.fixture(params=["forward", "forward_soon"])
def send(request: pytest.FixtureRequest) -> Send:
    return send_forward if request.param == "forward" else send_soon  # type: ignore[return-value]


def error(answer: Any) -> dict[str, Any]:
    assert isinstance(answer, Answer), f"expected an answer from the platform, got {answer!r}"
    result: dict[str, Any] = json.loads(answer.body)["error"]
    return result


def pid_of(response: Any) -> int:
    assert isinstance(response, InstanceResponse), response.body
    assert response.status == 200, response.body
    pid: int = json.loads(response.body)["pid"]
    return pid


async def test_time_queued_is_not_counted_against_the_timeout(harness: Harness, send: Send) -> None:
    # One instance, a 2 s timeout, two 1.2 s calls: the second waits ~1.2 s, then runs 1.2 s.
    harness.function("patient", CODE, timeout=2, queue_timeout=10, max_scale=1)
    pid = pid_of(await send(harness, "patient", "/"))
    first, second = await asyncio.gather(
        send(harness, "patient", "/?sleep=1.2"), send(harness, "patient", "/?sleep=1.2")
    )
    assert (pid_of(first), pid_of(second)) == (pid, pid)
    status = harness.executor.status("patient")
    assert (status.timeouts, status.restarts, status.queue_timeouts) == (0, 0, 0)


async def test_waiting_past_the_queue_timeout_is_a_503_and_kills_nothing(
    harness: Harness, send: Send
) -> None:
    harness.function("queued", CODE, timeout=10, queue_timeout=0.3, max_scale=1)
    pid = pid_of(await send(harness, "queued", "/"))
    pool = harness.executor.function("queued")
    running = asyncio.create_task(send(harness, "queued", "/?sleep=1.5"))
    await until(lambda: pool.inflight == 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await send(harness, "queued", "/")
    assert 0.25 < loop.time() - started < 1.4
    assert answer.status == 503
    assert error(answer) == {
        "code": "queue_timeout",
        "message": "no instance of queued was free within 0.3s; retry later",
    }
    assert (b"retry-after", b"1") in answer.headers
    assert pid_of(await running) == pid  # the instance that was busy was left alone
    assert not pool.waiters
    status = harness.executor.status("queued")
    assert (status.queue_timeouts, status.timeouts, status.restarts) == (1, 0, 0)
    assert pid_of(await send(harness, "queued", "/")) == pid


async def test_timeouts_kill_only_their_instance_and_never_arm_the_crash_loop(
    harness: Harness, send: Send
) -> None:
    harness.function("overrun", CODE, timeout=0.5, max_scale=2, min_scale=2)
    pool = harness.executor.function("overrun")
    await until(lambda: len(pool.instances) == 2, timeout=30)
    bystander = pool.instances[1]
    killed: list[int] = []
    for _ in range(4):  # past CRASH_LOOP (3) failures in a row
        victim = pool.pick()
        assert victim is not None and victim.pid
        answer = await send(harness, "overrun", "/?sleep=10")
        assert answer.status == 504
        assert error(answer)["code"] == "timeout"
        killed.append(victim.pid)
        await until(lambda: not pid_alive(killed[-1]))
        # min_scale brings the pool back to two instances, with no back-off in the way.
        await until(lambda: len(pool.instances) == 2, timeout=30)
    status = harness.executor.status("overrun")
    assert (status.timeouts, status.restarts, status.failures_in_a_row) == (4, 0, 0)
    assert status.backoff == 0
    assert status.last_exit_reason == "timeout after 0.5s"
    # Served right away, not refused as crash-looping.
    assert pid_of(await send(harness, "overrun", "/")) not in killed
    if bystander.pid not in killed:
        assert pid_alive(bystander.pid)


async def test_a_full_queue_is_a_429_and_starts_every_instance_allowed(
    harness: Harness, send: Send
) -> None:
    # Slow to load: the instance started for the queued request is not ready before the
    # refusal below.
    slow_loading = "import time\ntime.sleep(2)\n" + CODE
    harness.function("narrow", slow_loading, max_scale=3, queue_limit=1, queue_timeout=30)
    pool = harness.executor.function("narrow")
    pid_of(await send(harness, "narrow", "/"))
    running = asyncio.create_task(send(harness, "narrow", "/?sleep=3"))
    await until(lambda: pool.inflight == 1)
    waiting = asyncio.create_task(send(harness, "narrow", "/"))
    await until(lambda: pool.waiters)
    assert pool.starting == 1
    answer = await send(harness, "narrow", "/")
    assert answer.status == 429
    assert error(answer)["code"] == "overloaded"
    assert (b"retry-after", b"1") in answer.headers
    # The refusal is demand the queue could not hold: the pool grows to its max scale.
    assert len(pool.instances) + pool.starting == 3
    assert harness.executor.status("narrow").rejected == 1
    assert [r.status for r in await asyncio.gather(running, waiting)] == [200, 200]


async def test_a_callers_deadline_bounds_the_wait_and_the_run_together(
    harness: Harness,
) -> None:
    harness.function("bounded", CODE, timeout=10, queue_timeout=10, max_scale=1)
    pool = harness.executor.function("bounded")
    pid_of(await send_forward(harness, "bounded", "/"))
    running = asyncio.create_task(send_forward(harness, "bounded", "/?sleep=0.6"))
    await until(lambda: pool.inflight == 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await forward(harness.executor, pool, http("/?sleep=10"), timeout=1.2)
    # ~0.6 s queued, then the rest of the 1.2 s deadline running: about 1.2 s in all.
    assert 1.0 < loop.time() - started < 3.0
    assert answer.status == 504
    await running
