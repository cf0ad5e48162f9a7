"""The broker contract, on every broker: real Redis, NATS JetStream and RabbitMQ on loopback, a
Tansu Kafka broker started for the session, and the embedded broker.

Each test uses its own topic and group names, so what earlier tests or runs left on a shared
broker cannot leak in. A "restart" closes the subscription and the broker and opens new ones on
the same URL, as a platform that stops and starts again does.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from brokerkit import (  # noqa: F401 (fixtures)
    NETWORK_BROKERS,
    closed_port,
    kafka_url,
    nats_url,
    rabbitmq_url,
    redis_url,
    unique,
)

from fissile.triggers.mq.base import (
    BROKERS,
    Broker,
    BrokerError,
    Delivery,
    MissingExtra,
    Subscription,
    broker_class,
)

ALL_BROKERS = ("embedded", *NETWORK_BROKERS)

Opener = Callable[[], Awaitable[Broker]]


@pytest.fixture(params=ALL_BROKERS)
async def open_broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """``await open_broker()`` starts a new broker client of the type under test; every one
    opened is closed at the end. Two opened one after the other see the same broker."""
    mqtype: str = request.param
    if mqtype == "embedded":
        url = str(tmp_path / "embedded.db")
    else:
        url = request.getfixturevalue(f"{mqtype}_url")
    opened: list[Broker] = []

    async def start() -> Broker:
        broker = broker_class(mqtype)(url)  # type: ignore[call-arg]
        await broker.start()
        opened.append(broker)
        return broker

    yield start
    for broker in reversed(opened):
        await broker.close()


async def drain(subscription: Subscription, want: int, timeout: float = 10.0) -> list[Delivery]:
    """Fetch until ``want`` deliveries came or ``timeout`` passed."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        got += await subscription.fetch(want - len(got), min(left, 1.0))
    return got


async def test_publish_then_fetch_with_headers(open_broker: Opener) -> None:
    broker = await open_broker()
    topic, group = unique("t"), unique("g")
    subscription = await broker.subscribe(topic, group)
    await broker.publish(topic, b"\x00hello\xff", {"x-trace": "abc", "content-type": "text/plain"})
    [delivery] = await drain(subscription, 1)
    message = delivery.message
    assert message.topic == topic
    assert message.body == b"\x00hello\xff"
    assert message.headers == {"x-trace": "abc", "content-type": "text/plain"}
    assert message.id
    assert message.redelivered is False
    await delivery.ack()
    await subscription.close()


async def test_a_new_group_starts_at_the_oldest_message_held(open_broker: Opener) -> None:
    broker = await open_broker()
    topic = unique("t")
    await broker.publish(topic, b"early")
    late = await broker.subscribe(topic, unique("g"))
    await broker.publish(topic, b"on time")
    got = await drain(late, 1 if broker.mqtype == "rabbitmq" else 2)
    got += await late.fetch(10, 0.3)
    if broker.mqtype == "rabbitmq":
        # RabbitMQ keeps messages only in the queues of existing groups (docs/brokers.md).
        assert [d.message.body for d in got] == [b"on time"]
    else:
        assert [d.message.body for d in got] == [b"early", b"on time"]


async def test_bodies_and_headers_arrive_unchanged(open_broker: Opener) -> None:
    broker = await open_broker()
    topic, group = unique("t"), unique("g")
    subscription = await broker.subscribe(topic, group)
    body = bytes(range(256)) * 1024  # 256 KiB, every byte value
    headers = {"x-city": "Zürich ☀", "x-empty": "", "content-type": "application/octet-stream"}
    await broker.publish(topic, body, headers)
    await broker.publish(topic, b"")
    got = await drain(subscription, 2)
    assert [(d.message.body, d.message.headers) for d in got] == [(body, headers), (b"", {})]


async def test_fetch_returns_at_most_max_messages(open_broker: Opener) -> None:
    broker = await open_broker()
    topic, group = unique("t"), unique("g")
    subscription = await broker.subscribe(topic, group)
    for i in range(5):
        await broker.publish(topic, str(i).encode())
    first = await drain(subscription, 2)
    assert len(first) == 2
    rest = await drain(subscription, 3)
    assert sorted(d.message.body for d in first + rest) == [b"0", b"1", b"2", b"3", b"4"]


async def test_consumer_groups_are_independent(open_broker: Opener) -> None:
    broker = await open_broker()
    topic = unique("t")
    one = await broker.subscribe(topic, unique("g"))
    two = await broker.subscribe(topic, unique("g"))
    await broker.publish(topic, b"a")
    await broker.publish(topic, b"b")
    got_one = await drain(one, 2)
    for delivery in got_one:
        await delivery.ack()
    # The first group's acks are its own: the second still gets both.
    got_two = await drain(two, 2)
    assert sorted(d.message.body for d in got_one) == [b"a", b"b"]
    assert sorted(d.message.body for d in got_two) == [b"a", b"b"]


async def test_acked_messages_are_not_delivered_again(open_broker: Opener) -> None:
    broker = await open_broker()
    topic, group = unique("t"), unique("g")
    subscription = await broker.subscribe(topic, group)
    await broker.publish(topic, b"once")
    [delivery] = await drain(subscription, 1)
    await delivery.ack()
    await subscription.close()
    await broker.close()

    again = await open_broker()
    subscription = await again.subscribe(topic, group)
    assert await subscription.fetch(10, 1.0) == []
    # The reopened subscription works: what is published now comes, and only that.
    await again.publish(topic, b"next")
    [delivery] = await drain(subscription, 1)
    assert (delivery.message.body, delivery.message.redelivered) == (b"next", False)


async def test_unacked_messages_come_again_after_a_restart(open_broker: Opener) -> None:
    broker = await open_broker()
    topic, group = unique("t"), unique("g")
    subscription = await broker.subscribe(topic, group)
    for body in (b"one", b"two", b"three"):
        await broker.publish(topic, body, {"n": body.decode()})
    got = await drain(subscription, 3)
    assert [d.message.body for d in got] == [b"one", b"two", b"three"]
    # Acked out of order, and "two" never: it must come again, "one" must not.
    await got[2].ack()
    await got[0].ack()
    await subscription.close()
    await broker.close()

    again = await open_broker()
    subscription = await again.subscribe(topic, group)
    redelivered = await drain(subscription, 1, timeout=15)
    redelivered += await subscription.fetch(10, 0.5)
    bodies = [d.message.body for d in redelivered]
    assert b"two" in bodies
    assert b"one" not in bodies
    two = redelivered[bodies.index(b"two")]
    assert two.message.redelivered is True
    assert two.message.headers == {"n": "two"}
    for delivery in redelivered:
        await delivery.ack()
    await subscription.close()
    await again.close()

    # Acked after the restart: gone for good.
    third = await open_broker()
    subscription = await third.subscribe(topic, group)
    assert await subscription.fetch(10, 1.0) == []


async def test_acks_in_any_order_and_at_once_all_count(open_broker: Opener) -> None:
    broker = await open_broker()
    topic, group = unique("t"), unique("g")
    subscription = await broker.subscribe(topic, group)
    for i in range(20):
        await broker.publish(topic, str(i).encode())
    got = await drain(subscription, 20)
    assert len(got) == 20
    # As a trigger running deliveries concurrently acks them: all at once, last first.
    await asyncio.gather(*(delivery.ack() for delivery in reversed(got)))
    await subscription.close()
    await broker.close()

    again = await open_broker()
    subscription = await again.subscribe(topic, group)
    assert await subscription.fetch(10, 1.0) == []


async def test_order_is_kept_on_one_stream(open_broker: Opener) -> None:
    broker = await open_broker()
    topic, group = unique("t"), unique("g")
    subscription = await broker.subscribe(topic, group)
    sent = [f"m{i:03d}".encode() for i in range(50)]
    for body in sent:
        await broker.publish(topic, body)
    got = await drain(subscription, len(sent))
    assert [d.message.body for d in got] == sent
    ids = [d.message.id for d in got]
    assert len(set(ids)) == len(ids)


async def test_fetch_times_out_empty(open_broker: Opener) -> None:
    broker = await open_broker()
    subscription = await broker.subscribe(unique("t"), unique("g"))
    begin = time.monotonic()
    assert await subscription.fetch(10, 0.4) == []
    elapsed = time.monotonic() - begin
    assert 0.3 <= elapsed < 3.0


async def test_messages_published_to_other_topics_do_not_arrive(open_broker: Opener) -> None:
    broker = await open_broker()
    topic, other, group = unique("t"), unique("t"), unique("g")
    subscription = await broker.subscribe(topic, group)
    await broker.subscribe(other, group)
    await broker.publish(other, b"elsewhere")
    await broker.publish(topic, b"here")
    got = await drain(subscription, 1)
    got += await subscription.fetch(10, 0.3)
    assert [d.message.body for d in got] == [b"here"]


# -- failures --------------------------------------------------------------------------------

DOWN_URLS = {
    "redis": "redis://127.0.0.1:{port}/0",
    "nats": "nats://127.0.0.1:{port}",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:{port}/",
    "kafka": "kafka://127.0.0.1:{port}",
}


@pytest.mark.parametrize("mqtype", NETWORK_BROKERS)
async def test_a_broker_that_is_down_fails_fast_and_says_where(mqtype: str) -> None:
    pytest.importorskip(BROKERS[mqtype][2] or "")
    port = closed_port()
    broker = broker_class(mqtype)(DOWN_URLS[mqtype].format(port=port))  # type: ignore[call-arg]
    begin = time.monotonic()
    with pytest.raises(BrokerError) as caught:
        await broker.start()
    assert time.monotonic() - begin < 10
    text = str(caught.value)
    assert mqtype in text
    assert f"127.0.0.1:{port}" in text
    assert "guest:guest" not in text  # no password in messages
    await broker.close()


@pytest.mark.parametrize("mqtype", NETWORK_BROKERS)
def test_a_missing_client_library_names_the_extra(
    mqtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, extra, module = BROKERS[mqtype]
    assert module is not None
    # Fault injection: the client library is not installed.
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtra) as caught:
        broker_class(mqtype)
    assert f"pip install 'fissile[{extra}]'" in str(caught.value)
    assert repr(module) in str(caught.value)


def test_an_unknown_mqtype_lists_the_known_ones() -> None:
    with pytest.raises(BrokerError, match=r"unknown mqtype 'mqtt'.*redis.*kafka"):
        broker_class("mqtt")
