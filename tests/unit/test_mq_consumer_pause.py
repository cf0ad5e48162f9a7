"""An MQ consumer paused (its cluster node drained, ``fissile/triggers/mq/consumer.py``): it
stops fetching, finishes and acks the deliveries it holds, then closes its subscription so the
group's other members take every message; resumed, it subscribes and fetches again."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from fissile.models import MessageQueueTriggerSpec
from fissile.triggers.mq import consumer as consumer_module
from fissile.triggers.mq.base import Message
from fissile.triggers.mq.consumer import ConsumerManager


class FakeDelivery:
    def __init__(self, body: bytes, acked: list[bytes]) -> None:
        self.message = Message(topic="jobs", body=body, id=body.decode())
        self._acked = acked

    async def ack(self) -> None:
        self._acked.append(self.message.body)


class FakeBroker:
    """A queue every subscription of the group fetches from."""

    def __init__(self) -> None:
        self.queue: list[bytes] = []
        self.acked: list[bytes] = []
        self.subscribed = 0
        self.open = 0
        self.fetches_while_closed = 0

    async def subscribe(self, topic: str, group: str) -> Any:
        self.subscribed += 1
        self.open += 1
        broker = self

        class Subscription:
            closed = False

            async def fetch(self, max_messages: int, timeout: float) -> list[Any]:
                if self.closed:
                    broker.fetches_while_closed += 1
                taken, broker.queue[:max_messages] = broker.queue[:max_messages], []
                if not taken:
                    await asyncio.sleep(min(timeout, 0.05))
                return [FakeDelivery(body, broker.acked) for body in taken]

            async def close(self) -> None:
                self.closed = True
                broker.open -= 1

        return Subscription()


class FakeHub:
    shared = None

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker

    async def get(self, mqtype: str, url: str | None = None) -> FakeBroker:
        return self.broker


class FakeStore:
    def __init__(self, spec: MessageQueueTriggerSpec) -> None:
        self.spec = spec

    def list(self, kind: str) -> list[Any]:
        return [type("Record", (), {"data": self.spec.model_dump()})()]

    def subscribe(self, callback: Any) -> None:
        pass


async def until(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def test_a_paused_consumer_finishes_what_it_holds_then_lets_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handled: list[bytes] = []
    release = asyncio.Event()

    async def invoker(executor: Any, function: str, **kwargs: Any) -> Any:
        handled.append(kwargs["body"])
        await release.wait()
        return type("Ok", (), {"status": 200, "body": b"", "headers": []})()

    monkeypatch.setattr(consumer_module, "InstanceResponse", object)
    broker = FakeBroker()
    spec = MessageQueueTriggerSpec(name="jobs", function="f", topic="jobs", concurrency=2)
    manager = ConsumerManager(FakeStore(spec), FakeHub(broker), executor=None)  # type: ignore[arg-type]
    manager.start()
    consumer = manager.consumers["jobs"]
    consumer.invoker = invoker
    try:
        await until(lambda: consumer.status.state == "running", "consuming")
        broker.queue += [b"a", b"b"]
        await until(lambda: len(handled) == 2, "two deliveries taken")
        manager.pause(True)
        await asyncio.sleep(0.2)
        # Still open while its deliveries run, and fetching no more meanwhile.
        assert broker.open == 1 and consumer.status.state == "running"
        broker.queue.append(b"c")
        await asyncio.sleep(0.2)
        assert broker.queue == [b"c"]  # left for the other members
        release.set()
        await until(lambda: consumer.status.state == "paused", "paused")
        assert sorted(broker.acked) == [b"a", b"b"]  # finished and acked, then let go
        assert broker.open == 0 and broker.fetches_while_closed == 0
        assert broker.queue == [b"c"]
        manager.pause(False)
        await until(lambda: broker.acked.count(b"c") == 1, "c consumed after the resume")
        assert broker.subscribed == 2 and consumer.status.state == "running"
        # A trigger made while paused starts paused.
        manager.pause(True)
        manager._add(spec.model_copy(update={"name": "later"}))
        await asyncio.sleep(0.1)
        assert manager.consumers["later"].status.state == "paused"
        assert broker.subscribed == 2
    finally:
        release.set()
        await manager.stop()
