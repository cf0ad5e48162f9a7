"""The embedded broker on a real SQLite file: ordering, consumer groups, acks, and
redelivery of what was handed out but not acked when its process went away."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from fissile.triggers.mq.embedded import EmbeddedBroker


async def started(path: Path) -> EmbeddedBroker:
    broker = EmbeddedBroker(str(path))
    await broker.start()
    return broker


async def test_publish_fetch_ack_in_order(tmp_path: Path) -> None:
    broker = await started(tmp_path / "mq.db")
    for n in range(5):
        await broker.publish("t", f"m{n}".encode(), {"content-type": "text/plain", "n": str(n)})
    await broker.publish("other", b"elsewhere")
    subscription = await broker.subscribe("t", "g")
    first = await subscription.fetch(3, 0.1)
    rest = await subscription.fetch(10, 0.1)
    bodies = [d.message.body for d in first + rest]
    assert bodies == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert first[1].message.headers == {"content-type": "text/plain", "n": "1"}
    assert not any(d.message.redelivered for d in first + rest)
    for delivery in first + rest:
        await delivery.ack()
    assert await subscription.fetch(10, 0.05) == []
    await broker.close()


async def test_unacked_deliveries_come_again_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "mq.db"
    broker = await started(path)
    for n in range(4):
        await broker.publish("t", str(n).encode())
    subscription = await broker.subscribe("t", "g")
    handed = await subscription.fetch(3, 0.1)
    await handed[0].ack()
    # The process "dies": no close, no ack of the two others; a new one opens the file.
    again = await started(path)
    resumed = await again.subscribe("t", "g")
    deliveries = await resumed.fetch(10, 0.1)
    assert [(d.message.body, d.message.redelivered) for d in deliveries] == [
        (b"1", True),
        (b"2", True),
        (b"3", False),
    ]
    for delivery in deliveries:
        await delivery.ack()
    assert await (await (await started(path)).subscribe("t", "g")).fetch(10, 0.05) == []


async def test_groups_are_independent_and_start_at_the_oldest_message(tmp_path: Path) -> None:
    broker = await started(tmp_path / "mq.db")
    await broker.publish("t", b"before any group")
    a = await broker.subscribe("t", "a")
    (only,) = await a.fetch(10, 0.1)
    await only.ack()
    b = await broker.subscribe("t", "b")
    assert [d.message.body for d in await b.fetch(10, 0.1)] == [b"before any group"]


async def test_a_waiting_fetch_wakes_on_publish(tmp_path: Path) -> None:
    broker = await started(tmp_path / "mq.db")
    subscription = await broker.subscribe("t", "g")
    began = time.monotonic()
    waiting = asyncio.create_task(subscription.fetch(1, 5.0))
    await asyncio.sleep(0.05)
    await broker.publish("t", b"now")
    (delivery,) = await waiting
    assert delivery.message.body == b"now"
    assert time.monotonic() - began < 1.0


async def test_another_process_writing_is_seen_by_polling(tmp_path: Path) -> None:
    path = tmp_path / "mq.db"
    reader = await started(path)
    subscription = await reader.subscribe("t", "g")
    writer = await started(path)  # another connection: no in-process wake-up
    waiting = asyncio.create_task(subscription.fetch(1, 3.0))
    await asyncio.sleep(0.05)
    await writer.publish("t", b"from afar")
    (delivery,) = await waiting
    assert delivery.message.body == b"from afar"


async def test_messages_go_once_every_group_acked_them_or_they_expire(tmp_path: Path) -> None:
    broker = await started(tmp_path / "mq.db")
    fast = await broker.subscribe("t", "fast")
    slow = await broker.subscribe("t", "slow")
    for n in range(3):
        await broker.publish("t", str(n).encode())
    await broker.publish("nobody-reads", b"kept a while")
    for delivery in await fast.fetch(10, 0.1):
        await delivery.ack()
    assert broker.prune() == 0  # the slow group has not had them yet
    (first, *others) = await slow.fetch(10, 0.1)
    await first.ack()
    assert broker.prune() == 1  # only what both groups acked
    assert [d.message.body for d in others] == [b"1", b"2"]
    # Past the retention: gone unless a group holds it unacked.
    assert broker.prune(now=time.time() + 8 * 24 * 3600) == 1  # "nobody-reads"
    for delivery in others:
        await delivery.ack()
    assert broker.prune() == 2


async def test_a_dropped_group_no_longer_holds_messages(tmp_path: Path) -> None:
    broker = await started(tmp_path / "mq.db")
    await broker.subscribe("t", "gone")
    await broker.publish("t", b"m")
    assert broker.prune() == 0  # the group has not had it
    broker.drop_group("gone")
    live = await broker.subscribe("t", "live")
    (delivery,) = await live.fetch(1, 0.1)
    await delivery.ack()
    assert broker.prune() == 1
