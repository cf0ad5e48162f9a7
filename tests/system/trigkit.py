"""Helpers of the trigger system tests: reading a topic from the test process."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from fissile.triggers.mq.base import BrokerError, Message, broker_class
from fissile.triggers.mq.embedded import EmbeddedBroker


def unique(prefix: str) -> str:
    """A topic or resource name no other run on a shared broker uses."""
    return f"{prefix}-{secrets.token_hex(4)}"


def read_topic(
    mqtype: str,
    topic: str,
    count: int,
    *,
    data_dir: Path | None = None,
    url: str | None = None,
    timeout: float = 30.0,
    settle: float = 0.0,
) -> list[Message]:
    """Read messages of ``topic`` as a consumer group of its own until ``count`` have come (or
    ``timeout``), then for ``settle`` more seconds to catch extra (duplicate) ones."""

    async def read() -> list[Message]:
        if mqtype == "embedded":
            assert data_dir is not None
            broker = EmbeddedBroker(str(data_dir / "mq.db"))
        else:
            broker = broker_class(mqtype)(url)  # type: ignore[call-arg]
        await broker.start()
        found: list[Message] = []
        try:
            subscription = await broker.subscribe(topic, unique("reader"))
            deadline = time.monotonic() + timeout
            while len(found) < count and time.monotonic() < deadline:
                for delivery in await subscription.fetch(100, 0.5):
                    found.append(delivery.message)
                    await delivery.ack()
            end = time.monotonic() + settle
            while time.monotonic() < end:
                for delivery in await subscription.fetch(100, 0.2):
                    found.append(delivery.message)
                    await delivery.ack()
            await subscription.close()
        finally:
            await broker.close()
        return found

    return asyncio.run(read())


def log_lines(data_dir: Path, function: str, marker: str) -> list[list[str]]:
    """The words after ``marker`` on each line of a function's log that holds it."""
    path = data_dir / "logs" / "functions" / f"{function}.log"
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [line.split(marker, 1)[1].split() for line in text.splitlines() if marker in line]


def wait_for_lines(
    data_dir: Path, function: str, marker: str, count: int, timeout: float = 20.0
) -> list[list[str]]:
    deadline = time.monotonic() + timeout
    while True:
        found = log_lines(data_dir, function, marker)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


class Collector:
    """Consumer groups of the test's own on some topics, subscribed from before anything is
    published until ``stop``, collecting every message (a thread with its own event loop, so
    a group that starts at the newest message, as Kafka's, RabbitMQ's and NATS's do here,
    misses nothing)."""

    def __init__(
        self, mqtype: str, topics: list[str], url: str | None = None, data_dir: Path | None = None
    ) -> None:
        self.mqtype = mqtype
        self.topics = topics
        self.url = url
        self.data_dir = data_dir
        self.messages: dict[str, list[Message]] = {topic: [] for topic in topics}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> Collector:
        self._thread.start()
        if not self._ready.wait(60) or self._error is not None:
            self._stop.set()
            raise RuntimeError(f"collector could not subscribe: {self._error}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def got(self, topic: str) -> list[Message]:
        with self._lock:
            return list(self.messages[topic])

    async def _main(self) -> None:
        try:
            if self.mqtype == "embedded":
                assert self.data_dir is not None
                broker: Any = EmbeddedBroker(str(self.data_dir / "mq.db"))
            else:
                broker = broker_class(self.mqtype)(self.url)  # type: ignore[call-arg]
            await broker.start()
            group = unique("collector")
            subscriptions = [await broker.subscribe(topic, group) for topic in self.topics]
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()

        async def collect(topic: str, subscription: Any) -> None:
            while not self._stop.is_set():
                try:
                    deliveries = await subscription.fetch(100, 0.2)
                except BrokerError:  # a passing hiccup of the broker; the group keeps its place
                    await asyncio.sleep(0.2)
                    continue
                for delivery in deliveries:
                    with self._lock:
                        self.messages[topic].append(delivery.message)
                    await delivery.ack()

        try:
            await asyncio.gather(
                *(collect(t, s) for t, s in zip(self.topics, subscriptions, strict=True))
            )
        finally:
            for subscription in subscriptions:
                await subscription.close()
            await broker.close()
