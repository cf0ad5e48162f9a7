"""Publishing to the cluster's ``embedded`` topics (NATS JetStream) while NATS is away: the
caller is told at once, and what it was told was not published never turns up later."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import pytest
from brokerkit import Proxy, nats_url, unique  # noqa: F401 (fixtures)

from fissile.triggers.mq.base import BrokerError, Delivery
from fissile.triggers.mq.clustered import ClusterBroker


async def test_a_publish_refused_during_an_outage_is_not_stored_once_nats_is_back(
    nats_url: str,  # noqa: F811
) -> None:
    port = urlsplit(nats_url).port or 4222
    proxy = await Proxy(port).start()
    broker = ClusterBroker(proxy.url(nats_url), f"fissile.{unique('out')}")
    await broker.start()
    subscription = await broker.subscribe("t", "g")
    try:
        await broker.publish("t", b"before")
        listen = proxy.port
        await proxy.close()  # NATS unreachable: connections cut, new ones refused
        started = time.monotonic()
        with pytest.raises(BrokerError, match="not connected"):
            await broker.publish("t", b"during")
        # Said at once, not after the 5 s a confirmation may take.
        assert time.monotonic() - started < 2.0
        proxy = await Proxy(port).start(port=listen)
        bodies: list[bytes] = []
        published = False
        deadline = time.monotonic() + 30
        while b"after" not in bodies:
            assert time.monotonic() < deadline, bodies
            try:
                if not published:
                    await broker.publish("t", b"after")
                    published = True
                deliveries: list[Delivery] = await subscription.fetch(10, 0.5)
                for delivery in deliveries:
                    await delivery.ack()
                    bodies.append(delivery.message.body)
            except BrokerError:  # still reconnecting
                await asyncio.sleep(0.2)
        # "during" was refused: the stream never got it, before or after "after".
        assert b"during" not in bodies
        assert bodies == [b"before", b"after"]
    finally:
        await broker.close()
        await proxy.close()


async def test_a_delivery_whose_ack_failed_is_no_longer_claimed_as_in_progress(
    nats_url: str,  # noqa: F811
) -> None:
    """A failed ack (NATS away) may be lost: the subscription must stop telling the server
    the delivery is still worked on, or it would never come again."""
    port = urlsplit(nats_url).port or 4222
    proxy = await Proxy(port).start()
    broker = ClusterBroker(proxy.url(nats_url), f"fissile.{unique('ack')}")
    await broker.start()
    subscription = await broker.subscribe("t", "g")
    try:
        await broker.publish("t", b"one")
        deliveries: list[Delivery] = []
        deadline = time.monotonic() + 10
        while not deliveries and time.monotonic() < deadline:
            deliveries = await subscription.fetch(1, 1.0)
        assert [d.message.body for d in deliveries] == [b"one"]
        await proxy.close()  # NATS unreachable: connections cut, new ones refused
        with pytest.raises(BrokerError, match="ack on"):
            await deliveries[0].ack()
        assert not subscription._inflight  # type: ignore[attr-defined]
    finally:
        await broker.close()
