"""fissile/router/limits.py: the default connection limit, the fd limit, and the sweep that
times connections out."""

from __future__ import annotations

import asyncio
import resource

import pytest

from fissile.router.limits import Connections, Limits, default_max_connections, raise_fd_limit


def test_the_default_connection_limit_leaves_fds_for_everything_else() -> None:
    assert default_max_connections(1024) == 512
    assert default_max_connections(4096) == 3072
    assert default_max_connections(20000) == 15000
    assert default_max_connections(1 << 20) == 65536
    assert default_max_connections(64) == 32


def test_the_fd_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and hard > 64:
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        raised = raise_fd_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == raised
        if hard != resource.RLIM_INFINITY:
            assert raised == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Conn:
    def __init__(self) -> None:
        self.swept: list[float] = []

    def expire(self, now: float) -> None:
        self.swept.append(now)


async def test_connections_are_counted_and_swept_while_any_are_open() -> None:
    loop = asyncio.get_running_loop()
    connections = Connections(Limits(max_connections=2, header_timeout=0.2))
    first, second, third = Conn(), Conn(), Conn()
    assert connections.add(first, loop, keep_alive=5.0)
    assert connections.add(second, loop, keep_alive=5.0)
    assert not connections.add(third, loop, keep_alive=5.0)  # full
    async with asyncio.timeout(10):
        while len(first.swept) < 2:  # every 0.05 s: a quarter of the header timeout
            await asyncio.sleep(0.01)
    assert second.swept and not third.swept
    connections.discard(first)
    connections.discard(second)
    async with asyncio.timeout(10):
        while connections._timer is not None:  # nothing open: the sweep stops
            await asyncio.sleep(0.01)
    assert connections.add(third, loop, keep_alive=5.0)
    assert connections._timer is not None


@pytest.mark.parametrize("limit", [None, 10])
async def test_no_limit_means_no_limit(limit: int | None) -> None:
    loop = asyncio.get_running_loop()
    connections = Connections(Limits(max_connections=limit))
    added = [connections.add(Conn(), loop, keep_alive=5.0) for _ in range(20)]
    assert added.count(True) == (20 if limit is None else 10)
    connections.open.clear()
