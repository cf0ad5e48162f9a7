"""What each network broker does beyond the common contract: how a dead consumer's deliveries
come back, how URLs and their options are read, and how a broker's own names are chosen."""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import urlsplit

import pytest
from brokerkit import (  # noqa: F401 (fixtures)
    KAFKA_TEST_OPTIONS,
    NETWORK_BROKERS,
    Proxy,
    free_port,
    kafka_url,
    nats_url,
    rabbitmq_url,
    redis_url,
    tansu,
    unique,
    with_options,
)

from fissile.triggers.mq.base import BrokerError, Delivery, broker_class, redact, split_options


async def test_redis_claims_what_a_dead_consumer_left_pending(redis_url: str) -> None:  # noqa: F811
    from fissile.triggers.mq.redis import RedisBroker

    topic, group = unique("t"), unique("g")
    dead = RedisBroker(with_options(redis_url, consumer="node-a"))
    await dead.start()
    subscription = await dead.subscribe(topic, group)
    await dead.publish(topic, b"orphan", {"k": "v"})
    [delivery] = await subscription.fetch(1, 5)
    assert delivery.message.redelivered is False
    await dead.close()  # node-a never comes back

    other = RedisBroker(with_options(redis_url, consumer="node-b", claim_idle=0.3))
    await other.start()
    try:
        subscription = await other.subscribe(topic, group)
        begin = time.monotonic()
        got = []
        while not got and time.monotonic() - begin < 5:
            got = await subscription.fetch(10, 0.1)
        # Not before it was idle for claim_idle: node-a might only have been slow.
        assert time.monotonic() - begin >= 0.25
        [claimed] = got
        assert (claimed.message.body, claimed.message.headers) == (b"orphan", {"k": "v"})
        assert claimed.message.id == delivery.message.id
        assert claimed.message.redelivered is True
        await claimed.ack()
        assert await subscription.fetch(10, 0.5) == []
    finally:
        await other.close()


async def test_redis_refuses_a_header_named_like_the_body_field(redis_url: str) -> None:  # noqa: F811
    from fissile.triggers.mq.redis import RedisBroker

    broker = RedisBroker(redis_url)
    await broker.start()
    try:
        with pytest.raises(BrokerError, match="'body' is reserved"):
            await broker.publish(unique("t"), b"x", {"body": "y"})
    finally:
        await broker.close()


async def test_nats_keeps_a_slow_delivery_and_returns_a_dead_ones(nats_url: str) -> None:  # noqa: F811
    from fissile.triggers.mq.nats import NatsBroker

    topic, group = unique("t"), unique("g")
    url = with_options(nats_url, ack_wait=1)
    worker, other = NatsBroker(url), NatsBroker(url)
    await worker.start()
    await other.start()
    try:
        working = await worker.subscribe(topic, group)
        await worker.publish(topic, b"slow")
        [delivery] = await working.fetch(1, 5)
        waiting = await other.subscribe(topic, group)
        # Longer than ack_wait: the worker says it is still at it, so nobody else gets it.
        assert await waiting.fetch(1, 1.6) == []
        # Fault injection: the worker's connection drops without a word (a crash).
        assert worker._nc is not None
        await worker._nc.close()
        [again] = await waiting.fetch(1, 5)
        assert again.message.body == b"slow"
        assert again.message.id == delivery.message.id
        assert again.message.redelivered is True
        await again.ack()
    finally:
        await other.close()
        await worker.close()


async def test_nats_names_streams_and_consumers_it_may_use(nats_url: str) -> None:  # noqa: F811
    from fissile.triggers.mq.nats import jetstream_name

    assert jetstream_name("fissile", "orders") == "fissile_orders"
    dotted = jetstream_name("fissile", "orders.eu")
    assert "." not in dotted and dotted.startswith("fissile_orders_eu_")
    # Replacing characters must not make two topics share a stream.
    assert dotted != jetstream_name("fissile", "orders_eu")


async def test_kafka_topics_get_the_partitions_asked_for(kafka_url: str) -> None:  # noqa: F811
    from aiokafka import TopicPartition

    from fissile.triggers.mq.kafka import KafkaBroker

    broker = KafkaBroker(with_options(kafka_url, partitions=3))
    await broker.start()
    try:
        topic, group = unique("t"), unique("g")
        subscription = await broker.subscribe(topic, group)
        for i in range(30):
            await broker.publish(topic, str(i).encode())
        got: list[str] = []
        deadline = time.monotonic() + 10
        while len(got) < 30 and time.monotonic() < deadline:
            for delivery in await subscription.fetch(30, 0.5):
                got.append(delivery.message.id)
                await delivery.ack()
        partitions = {ident.split(":")[0] for ident in got}
        assert len(got) == 30
        assert partitions <= {"0", "1", "2"}
        assert len(partitions) > 1
        consumer = subscription._consumer  # type: ignore[attr-defined]
        assert {tp.partition for tp in consumer.assignment()} == {0, 1, 2}
        committed = [await consumer.committed(TopicPartition(topic, p)) for p in range(3)]
        assert sum(c or 0 for c in committed) == 30
    finally:
        await broker.close()


def test_kafka_urls_with_and_without_scheme() -> None:
    from fissile.triggers.mq.kafka import KafkaBroker, bootstrap_servers

    assert bootstrap_servers("127.0.0.1:9092") == "127.0.0.1:9092"
    assert bootstrap_servers("kafka://127.0.0.1:1,127.0.0.1:2?partitions=2") == (
        "127.0.0.1:1,127.0.0.1:2"
    )
    broker = KafkaBroker("kafka://127.0.0.1:1?partitions=4&session_timeout_ms=1000")
    assert (broker.partitions, broker.session_timeout_ms) == (4, 1000)
    assert KafkaBroker().servers == "127.0.0.1:9092"


def test_options_are_taken_out_of_the_url_and_checked() -> None:
    from fissile.triggers.mq.redis import RedisBroker

    url, ours = split_options("redis://h:1/0?consumer=a&socket_timeout=3", ["consumer"])
    assert (url, ours) == ("redis://h:1/0?socket_timeout=3", {"consumer": "a"})
    with pytest.raises(BrokerError, match="claim_idle='soon' must be a number"):
        RedisBroker("redis://127.0.0.1:6379/0?claim_idle=soon")


def test_passwords_never_reach_messages() -> None:
    assert redact("amqp://guest:guest@127.0.0.1:5672/") == "amqp://guest:***@127.0.0.1:5672/"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


async def test_a_wrong_password_is_a_broker_error_naming_the_broker() -> None:
    from brokerkit import require_service

    url = require_service("rabbitmq").replace("guest:guest", "guest:not-the-password")
    from fissile.triggers.mq.rabbitmq import RabbitMQBroker

    broker = RabbitMQBroker(url)
    with pytest.raises(BrokerError) as caught:
        await asyncio.wait_for(broker.start(), 15)
    assert "rabbitmq at amqp://guest:***@127.0.0.1:5672/" in str(caught.value)
    assert "not-the-password" not in str(caught.value)


# Slow on NATS (~6 s): a JetStream publish sent as the connection dies waits out its 5 s timeout.
@pytest.mark.parametrize(
    "mqtype",
    [pytest.param(m, marks=pytest.mark.slow) if m == "nats" else m for m in NETWORK_BROKERS],
)
async def test_a_dropped_connection_loses_nothing(
    mqtype: str, request: pytest.FixtureRequest
) -> None:
    """Every connection is cut (RST) while a delivery is unacked; working on as the MQ consumer
    does (on a BrokerError, subscribe again), the message published after the cut arrives and
    the unacked one is either acked after all or delivered again."""
    with contextlib.ExitStack() as stack:
        if mqtype == "kafka":
            # Clients reconnect to the advertised address: a Tansu of its own advertises the
            # proxy's port.
            proxy = Proxy(0)
            proxy.port = free_port()
            running = stack.enter_context(tansu(advertised_port=proxy.port))
            proxy.target_port = running.port
            await proxy.start(port=proxy.port)
            url = f"kafka://127.0.0.1:{proxy.port}?{KAFKA_TEST_OPTIONS}"
        else:
            real = request.getfixturevalue(f"{mqtype}_url")
            port = urlsplit(real).port
            assert port is not None
            proxy = await Proxy(port).start()
            url = proxy.url(real)
        try:
            await _survive_a_cut(mqtype, url, proxy)
        finally:
            await proxy.close()


async def _survive_a_cut(mqtype: str, url: str, proxy: Proxy) -> None:
    broker = broker_class(mqtype)(url)  # type: ignore[call-arg]
    await broker.start()
    topic, group = unique("t"), unique("g")
    subscription = await broker.subscribe(topic, group)
    try:
        await broker.publish(topic, b"before")
        first: list[Delivery] = []
        deadline = time.monotonic() + 10
        while not first and time.monotonic() < deadline:
            first = await subscription.fetch(1, 1.0)
        assert [d.message.body for d in first] == [b"before"]
        assert proxy.cut() > 0

        pending: list[Delivery] = list(first)  # delivered, not acked yet
        settled: set[bytes] = set()  # acked
        published = False
        errors: list[str] = []
        deadline = time.monotonic() + 30
        while not (published and settled >= {b"before", b"after"}):
            assert time.monotonic() < deadline, (published, settled, errors[-3:])
            try:
                if not published:
                    await broker.publish(topic, b"after")
                    published = True
                while pending:
                    await pending[0].ack()
                    settled.add(pending.pop(0).message.body)
                pending += await subscription.fetch(10, 0.5)
            except BrokerError as exc:
                errors.append(str(exc))
                # An ack that failed leaves its message to come again: forget the delivery.
                pending.clear()
                with contextlib.suppress(BrokerError):
                    await subscription.close()
                await asyncio.sleep(0.2)
                with contextlib.suppress(BrokerError):
                    subscription = await broker.subscribe(topic, group)
    finally:
        with contextlib.suppress(BrokerError):
            await subscription.close()
        await broker.close()


def test_an_absent_broker_skips_here_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import brokerkit

    monkeypatch.setitem(brokerkit.SERVICE_URLS, "redis", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no redis broker listens at"):
        brokerkit.require_service("redis")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: broker tests must run"):
        brokerkit.require_service("redis")


async def test_kafka_group_members_share_partitions_and_take_over(kafka_url: str) -> None:  # noqa: F811
    """Two members of one group split a two-partition topic; when one leaves, the other takes
    its partitions, and nothing published is lost on the way (rebalances included)."""
    from fissile.triggers.mq.kafka import KafkaBroker

    topic, group = unique("t"), unique("g")
    one = KafkaBroker(with_options(kafka_url, partitions=2))
    two = KafkaBroker(with_options(kafka_url, partitions=2))
    await one.start()
    await two.start()
    try:
        first = await one.subscribe(topic, group)
        second = await two.subscribe(topic, group)
        members = [s._consumer for s in (first, second)]  # type: ignore[attr-defined]
        deadline = time.monotonic() + 20
        while not all(len(m.assignment()) == 1 for m in members):
            assert time.monotonic() < deadline, [m.assignment() for m in members]
            await asyncio.sleep(0.05)
        sent = {f"m{i}".encode() for i in range(40)}
        for body in sorted(sent):
            await one.publish(topic, body)
        seen: set[bytes] = set()
        per_member: dict[int, set[str]] = {0: set(), 1: set()}
        deadline = time.monotonic() + 20
        while seen != sent and time.monotonic() < deadline:
            for index, subscription in enumerate((first, second)):
                for delivery in await subscription.fetch(40, 0.2):
                    seen.add(delivery.message.body)
                    per_member[index].add(delivery.message.id.split(":")[0])
                    await delivery.ack()
        assert seen == sent
        # Both members worked once the group settled (each on its own partition).
        assert per_member[0] and per_member[1]

        await first.close()
        later = {f"n{i}".encode() for i in range(10)}
        for body in sorted(later):
            await two.publish(topic, body)
        got: set[bytes] = set()
        deadline = time.monotonic() + 20
        while not later <= got and time.monotonic() < deadline:
            for delivery in await second.fetch(20, 0.5):
                got.add(delivery.message.body)
                await delivery.ack()
        assert later <= got
        assert per_member[0] | per_member[1] == {"0", "1"}
    finally:
        await two.close()
        await one.close()
