"""The router's per-connection function clock fires at each request's own deadline."""

from __future__ import annotations

import asyncio
from typing import Any

from fissile.router.proxy import _Clock


class _Fake:
    def __init__(self) -> None:
        self.expired_at: float | None = None

    def _expired(self) -> None:
        self.expired_at = asyncio.get_running_loop().time()


async def test_a_later_request_times_out_at_its_own_deadline_not_the_first_ones() -> None:
    loop = asyncio.get_running_loop()
    clock = _Clock(loop)
    first: Any = _Fake()
    second: Any = _Fake()
    clock.start(first, 0.1)
    clock.exchange = None  # the first request answered in time
    await asyncio.sleep(0.05)
    started = loop.time()
    clock.start(second, 0.1)
    await asyncio.sleep(0.3)
    assert first.expired_at is None
    assert second.expired_at is not None
    assert 0.09 <= second.expired_at - started < 0.2


async def test_a_shorter_timeout_moves_the_timer_earlier() -> None:
    loop = asyncio.get_running_loop()
    clock = _Clock(loop)
    long: Any = _Fake()
    clock.start(long, 10)
    clock.exchange = None
    short: Any = _Fake()
    started = loop.time()
    clock.start(short, 0.05)
    await asyncio.sleep(0.2)
    assert short.expired_at is not None and short.expired_at - started < 0.15
    assert long.expired_at is None


async def test_an_answered_request_never_expires() -> None:
    clock = _Clock(asyncio.get_running_loop())
    answered: Any = _Fake()
    clock.start(answered, 0.05)
    clock.exchange = None
    await asyncio.sleep(0.15)
    assert answered.expired_at is None and clock.handle is None
