"""The embedded MQ type in cluster mode is NATS JetStream (``triggers/mq/clustered.py``): a
trigger's group is a durable consumer on the NATS server, which must go with the trigger (when
it is deleted or moved to another topic) and stay when a node merely stops. Against the NATS
server on loopback, checked with nats-py's JetStream manager."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
from brokerkit import require_service

from fissile.store import open_store
from fissile.triggers.mq.consumer import ConsumerManager, group_of
from fissile.triggers.mq.hub import BrokerHub
from fissile.triggers.mq.nats import jetstream_name


@pytest.fixture
async def jetstream() -> AsyncIterator[Any]:
    client = await nats.connect(require_service("nats"))
    yield client.jetstream()
    await client.close()


async def consumers(js: Any, subject: str) -> set[str]:
    """The durable consumers on the stream that stores ``subject`` (none: no stream)."""
    try:
        stream = await js.find_stream_name_by_subject(subject)
    except nats.js.errors.NotFoundError:
        return set()
    for _ in range(100):
        try:
            return {info.name for info in await js.consumers_info(stream)}
        except AttributeError:
            # A consumer being deleted while the server listed them comes as null, which
            # nats-py cannot read: the deletion is under way, the list asked for again.
            await asyncio.sleep(0.05)
    return {info.name for info in await js.consumers_info(stream)}


async def until(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not within {timeout:g}s"
        await asyncio.sleep(0.05)


async def test_a_deleted_or_moved_trigger_leaves_no_jetstream_consumer(
    tmp_path: Path, jetstream: Any
) -> None:
    prefix = f"fissile.t{uuid.uuid4().hex[:12]}"
    store = open_store(f"sqlite:///{tmp_path / 'fissile.db'}")
    hub = BrokerHub(tmp_path / "mq.db", shared=(require_service("nats"), prefix))
    manager = ConsumerManager(store, hub, executor=None)  # type: ignore[arg-type]
    manager.start()
    one, two = f"{prefix}.jobs", f"{prefix}.other"
    durable_one = jetstream_name(group_of("t"), one)
    durable_two = jetstream_name(group_of("t"), two)
    try:
        trigger = {"name": "t", "function": "f", "mqtype": "embedded", "topic": "jobs"}
        store.create("mqtriggers", "t", trigger)
        store.create("mqtriggers", "kept", {**trigger, "name": "kept"})

        async def made() -> bool:
            return {durable_one, jetstream_name(group_of("kept"), one)} <= await consumers(
                jetstream, one
            )

        await until(made, "the triggers' durable consumers made")
        store.update("mqtriggers", "t", {**trigger, "topic": "other"})

        async def moved() -> bool:
            return durable_one not in await consumers(
                jetstream, one
            ) and durable_two in await consumers(jetstream, two)

        await until(moved, "the old topic's consumer deleted, the new one's made")
        store.update("mqtriggers", "t", {**trigger, "topic": "other", "concurrency": 2})
        store.delete("mqtriggers", "t")

        async def gone() -> bool:
            return durable_two not in await consumers(jetstream, two)

        await until(gone, "the deleted trigger's consumer deleted")
        # Another trigger on the same topic keeps its own.
        assert jetstream_name(group_of("kept"), one) in await consumers(jetstream, one)
    finally:
        await manager.stop()
        await hub.close()
        store.close()
    # A node that stops leaves its triggers' consumers: the cluster still has the triggers.
    assert jetstream_name(group_of("kept"), one) in await consumers(jetstream, one)
    for subject in (one, two):
        try:
            await jetstream.delete_stream(await jetstream.find_stream_name_by_subject(subject))
        except nats.js.errors.NotFoundError:
            pass
