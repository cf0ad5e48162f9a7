"""The router's per-connection function clock fires at each request's own deadline (never
earlier), and never for a request already answered. Deadlines are checked from below only: a
loaded machine may fire a timer late, never early."""

from __future__ import annotations

import asyncio
from typing import Any

from fissile.router.proxy import _Clock, _QueueClock, _Queued

PATIENCE = 30.0  # generous: the loop may be slow on a loaded machine


class _Fake:
    def __init__(self) -> None:
        self.expired_at: float | None = None

    def _expired(self) -> None:
        self.expired_at = asyncio.get_running_loop().time()


async def _until(condition: Any) -> None:
    async with asyncio.timeout(PATIENCE):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_later_request_times_out_at_its_own_deadline_not_the_first_ones() -> None:
    loop = asyncio.get_running_loop()
    clock = _Clock(loop)
    first: Any = _Fake()
    second: Any = _Fake()
    clock.start(first, 0.2)
    clock.exchange = None  # the first request answered in time
    await asyncio.sleep(0.1)
    started = loop.time()
    clock.start(second, 0.2)  # its deadline lies after the armed timer's
    await _until(lambda: second.expired_at is not None)
    assert first.expired_at is None
    assert second.expired_at - started >= 0.2 - 0.005  # re-armed, not fired at the first's


async def test_a_shorter_timeout_moves_the_timer_earlier() -> None:
    loop = asyncio.get_running_loop()
    clock = _Clock(loop)
    long: Any = _Fake()
    clock.start(long, 3600)
    clock.exchange = None
    short: Any = _Fake()
    started = loop.time()
    clock.start(short, 0.05)
    await _until(lambda: short.expired_at is not None)  # would hang an hour if not moved
    assert short.expired_at - started >= 0.05 - 0.005
    assert long.expired_at is None


async def test_an_answered_request_never_expires() -> None:
    clock = _Clock(asyncio.get_running_loop())
    answered: Any = _Fake()
    clock.start(answered, 0.05)
    clock.exchange = None
    await _until(lambda: clock.handle is None)  # the timer fired, idle
    assert answered.expired_at is None


async def test_a_closed_connection_drops_an_idle_timer() -> None:
    clock = _Clock(asyncio.get_running_loop())
    answered: Any = _Fake()
    clock.start(answered, 3600)
    clock.exchange = None
    clock.idle_close()
    assert clock.handle is None


class _FakeExchange:
    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.expired_at: float | None = None

    def _expired(self) -> None:
        self.expired_at = asyncio.get_running_loop().time()
        self.pool.waiters.remove(self.queued)


async def test_the_queue_clock_expires_each_waiter_at_its_own_deadline() -> None:
    """One timer for a function's queue: armed for the earliest deadline (moved earlier for a
    shorter queue timeout), re-armed for the next after firing, never early."""
    loop = asyncio.get_running_loop()
    pool: Any = type("Pool", (), {})()
    pool.waiters = []
    clock = _QueueClock(pool, loop)
    started = loop.time()
    waiters = []
    for timeout in (0.3, 0.1):  # the second request's queue timeout is shorter
        exchange: Any = _FakeExchange(pool)
        exchange.queued = _Queued(exchange, started + timeout)
        pool.waiters.append(exchange.queued)
        clock.arm(exchange.queued.deadline)
        waiters.append(exchange)
    slow, quick = waiters
    await _until(lambda: quick.expired_at is not None)
    assert quick.expired_at - started >= 0.1 - 0.005
    assert slow.expired_at is None
    await _until(lambda: slow.expired_at is not None)
    assert slow.expired_at - started >= 0.3 - 0.005
    assert not pool.waiters and clock.handle is None
