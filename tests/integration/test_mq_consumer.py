"""An MQ trigger's consumer on the real embedded broker, with the function call replaced by a
stand-in (to force failures and crashes): outcomes, retries, the error topic, acks only once
the outcome is recorded, and concurrency."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fissile.executor.connection import InstanceResponse
from fissile.models import MessageQueueTriggerSpec
from fissile.router.proxy import Answer
from fissile.triggers.mq import consumer as consumer_module
from fissile.triggers.mq.base import BrokerError, Message
from fissile.triggers.mq.consumer import Consumer
from fissile.triggers.mq.hub import BrokerHub


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer_module, "RETRY_BASE", 0.01)
    monkeypatch.setattr(consumer_module, "FETCH_WAIT", 0.1)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[BrokerHub]:
    made = BrokerHub(tmp_path / "mq.db")
    yield made
    await made.close()


def spec(**fields: Any) -> MessageQueueTriggerSpec:
    base = {"name": "t", "function": "f", "topic": "in", "resptopic": "out", "errortopic": "err"}
    return MessageQueueTriggerSpec.model_validate({**base, **fields})


def ok(body: bytes) -> InstanceResponse:
    return InstanceResponse(200, [(b"content-type", b"application/json")], body, True)


async def drain(hub: BrokerHub, topic: str, count: int, timeout: float = 5.0) -> list[Message]:
    subscription = await (await hub.get("embedded")).subscribe(topic, "test-reader")
    found: list[Message] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(found) < count and asyncio.get_running_loop().time() < deadline:
        for delivery in await subscription.fetch(100, 0.1):
            found.append(delivery.message)
            await delivery.ack()
    await subscription.close()
    return found


async def test_answers_go_to_the_response_topic(hub: BrokerHub) -> None:
    seen: list[dict[str, Any]] = []

    async def function(executor: Any, name: str, **request: Any) -> InstanceResponse:
        seen.append(request["headers"])
        return ok(b'{"echo": ' + request["body"] + b"}")

    await hub.publish(
        "embedded",
        "in",
        b"1",
        {
            "content-type": "application/json",
            "k": "v",
            "bad name\r\nx-injected": "1",
            "x-fissile-function": "forged",
        },
    )
    consumer = Consumer(spec(), hub, None, function)  # type: ignore[arg-type]
    consumer.start()
    (answer,) = await drain(hub, "out", 1)
    await consumer.stop()
    assert json.loads(answer.body) == {"echo": 1}
    assert answer.headers["content-type"] == "application/json"
    headers = seen[0]
    assert headers["x-fissile-trigger"] == "mqt"
    assert headers["x-fissile-topic"] == "in"
    assert headers["x-fissile-redelivered"] == "false"
    assert headers["k"] == "v"
    assert "x-fissile-function" not in headers
    assert not any("injected" in name for name in headers)
    assert consumer.status.processed == 1


async def test_failures_are_retried_then_reported_without_blocking(hub: BrokerHub) -> None:
    calls: list[bytes] = []

    async def function(executor: Any, name: str, **request: Any) -> InstanceResponse | Answer:
        calls.append(request["body"])
        if request["body"] == b"bad":
            return Answer(504, "timeout", "timeout after 1s")
        if request["body"] == b"fault" and calls.count(b"fault") == 1:
            raise RuntimeError("a fault of the platform")
        return ok(request["body"])

    for body in (b"bad", b"good-1", b"fault", b"good-2"):
        await hub.publish("embedded", "in", body)
    consumer = Consumer(spec(maxretries=2), hub, None, function)  # type: ignore[arg-type]
    consumer.start()
    answers = await drain(hub, "out", 3)
    (report,) = await drain(hub, "err", 1)
    await consumer.stop()
    # In order; the fault counted as a failed attempt, retried.
    assert [m.body for m in answers] == [b"good-1", b"fault", b"good-2"]
    assert calls.count(b"bad") == 3
    error = json.loads(report.body)
    assert error["error"] == "timeout after 1s"
    assert error["status"] == 504
    assert error["attempts"] == 3
    assert base64.b64decode(error["message"]["body_base64"]) == b"bad"
    assert consumer.status.failed == 1


async def test_a_busy_function_is_called_again_without_spending_attempts(
    hub: BrokerHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumer_module, "BUSY_PAUSE", 0.01)
    busy = [
        Answer(429, "overloaded", "function f is at capacity"),
        Answer(503, "queue_timeout", "no instance of f was free within 1s"),
    ] * 3  # six busy answers, more than maxretries + 1
    attempts: list[str] = []

    async def function(executor: Any, name: str, **request: Any) -> InstanceResponse | Answer:
        attempts.append(request["headers"]["x-fissile-attempt"])
        return busy.pop(0) if busy else ok(request["body"])

    await hub.publish("embedded", "in", b"patient")
    consumer = Consumer(spec(maxretries=1), hub, None, function)  # type: ignore[arg-type]
    consumer.start()
    (answer,) = await drain(hub, "out", 1)
    await consumer.stop()
    assert answer.body == b"patient"
    assert attempts == ["1"] * 7  # the function never ran before the last call
    assert (consumer.status.processed, consumer.status.failed) == (1, 0)


async def test_no_ack_until_the_outcome_is_recorded(
    hub: BrokerHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def function(executor: Any, name: str, **request: Any) -> InstanceResponse:
        return ok(b"done")

    original = hub.publish

    async def refusing(mqtype: str, topic: str, *args: Any, **kwargs: Any) -> None:
        if topic == "out":
            raise BrokerError("response topic unavailable")
        await original(mqtype, topic, *args, **kwargs)

    await hub.publish("embedded", "in", b"m")
    monkeypatch.setattr(hub, "publish", refusing)
    consumer = Consumer(spec(), hub, None, function)  # type: ignore[arg-type]
    consumer.start()
    await asyncio.sleep(0.5)
    error = consumer.status.error
    await consumer.stop()  # the platform stops while the outcome cannot be recorded
    assert error is not None and "response topic unavailable" in error
    monkeypatch.setattr(hub, "publish", original)
    assert consumer.status.processed == 0

    restarted = Consumer(spec(), hub, None, function)  # type: ignore[arg-type]
    restarted.start()
    (answer,) = await drain(hub, "out", 1)
    await restarted.stop()
    assert answer.body == b"done"


async def test_a_crash_mid_call_is_delivered_again(hub: BrokerHub) -> None:
    started = asyncio.Event()
    headers: list[dict[str, str]] = []

    async def hanging(executor: Any, name: str, **request: Any) -> InstanceResponse:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError

    async def function(executor: Any, name: str, **request: Any) -> InstanceResponse:
        headers.append(request["headers"])
        return ok(request["body"])

    await hub.publish("embedded", "in", b"once")
    consumer = Consumer(spec(), hub, None, hanging)  # type: ignore[arg-type]
    consumer.start()
    await asyncio.wait_for(started.wait(), 5)
    await consumer.stop()
    again = Consumer(spec(), hub, None, function)  # type: ignore[arg-type]
    again.start()
    (answer,) = await drain(hub, "out", 1)
    await again.stop()
    assert answer.body == b"once"
    assert headers[0]["x-fissile-redelivered"] == "true"


async def test_concurrency_bounds_messages_in_flight(hub: BrokerHub) -> None:
    inflight = 0
    peak = 0

    async def function(executor: Any, name: str, **request: Any) -> InstanceResponse:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(0.05)
        inflight -= 1
        return ok(request["body"])

    for n in range(12):
        await hub.publish("embedded", "in", str(n).encode())
    consumer = Consumer(spec(concurrency=4), hub, None, function)  # type: ignore[arg-type]
    consumer.start()
    answers = await drain(hub, "out", 12)
    await consumer.stop()
    assert sorted(int(m.body) for m in answers) == list(range(12))
    assert peak == 4


async def test_an_unreachable_broker_is_a_status_not_a_crash(hub: BrokerHub) -> None:
    consumer = Consumer(  # type: ignore[arg-type]
        spec(mqtype="nats", broker_url="nats://127.0.0.1:1"), hub, None
    )
    consumer.start()
    for _ in range(100):
        if consumer.status.state == "error":
            break
        await asyncio.sleep(0.05)
    state, error = consumer.status.state, consumer.status.error
    await consumer.stop()
    assert state == "error"
    assert error is not None and "127.0.0.1:1" in error
