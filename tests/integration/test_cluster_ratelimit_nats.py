"""Two in-process nodes sharing their rate-limit counts over the NATS server on loopback
(``fissile/cluster/ratelimits.py``): what one lets through is debited from the other, and a
node cut off from NATS counts alone until it is back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import pytest
from brokerkit import Proxy, nats_url, unique  # noqa: F401 (fixtures)

from fissile.cluster.ratelimits import RateSharing, SharedBucket, subject


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def sharing(url: str, topic: str, node: str) -> AsyncIterator[RateSharing]:
    node_sharing = RateSharing(url, topic, node)
    node_sharing.start()
    try:
        await until(lambda: node_sharing.connected, 15, f"{node} connected to NATS")
        yield node_sharing
    finally:
        await node_sharing.stop()


def bucket(node: RateSharing) -> SharedBucket:
    made = node.limits.bucket("route/limited", 0.5, 5)
    assert isinstance(made, SharedBucket)
    return made


async def test_what_one_node_lets_through_the_other_pays_for(nats_url: str) -> None:  # noqa: F811
    topic = subject(f"fissile.{unique('rl')}")
    async with sharing(nats_url, topic, "n1") as one, sharing(nats_url, topic, "n2") as two:
        first, second = bucket(one), bucket(two)
        assert [first.take() for _ in range(4)] == [0.0] * 4
        await until(lambda: second.level() < 1.5, 10, "node n2 debited")
        assert second.take() == 0.0
        assert second.take() > 0  # the limit's 5 are spent, across both nodes
        # n2's request reaches n1 too: n1 has nothing left either.
        await until(lambda: first.level() < 0.5, 10, "node n1 debited")
        assert first.take() > 0


async def test_without_nats_a_node_counts_alone_and_shares_again_once_it_is_back(
    nats_url: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "fissile.cluster")
    topic = subject(f"fissile.{unique('rl')}")
    port = urlsplit(nats_url).port or 4222
    proxy = await Proxy(port).start()
    try:
        async with (
            sharing(nats_url, topic, "n1") as one,
            sharing(proxy.url(nats_url), topic, "n2") as two,
        ):
            first, second = bucket(one), bucket(two)
            await proxy.close()  # NATS unreachable from n2
            await until(lambda: not two.connected, 10, "n2 cut off")
            assert second.take() == 0.0
            assert second.take() == 0.0
            await until(lambda: second.taken == 0, 10, "n2's counts dropped")
            await asyncio.sleep(0.3)  # a message would have come within this
            assert first.level() == pytest.approx(5.0)
            cut = [r for r in caplog.records if "unreachable" in r.getMessage()]
            assert len(cut) == 1, cut  # said once, not at every failed reconnect

            proxy = await Proxy(port).start(proxy.port)  # NATS reachable again
            await until(lambda: two.connected, 15, "n2 back on NATS")
            assert any("is back" in r.getMessage() for r in caplog.records)
            level = first.level()
            assert second.take() == 0.0
            await until(lambda: first.level() < level - 0.5, 10, "n1 debited again")
    finally:
        await proxy.close()
