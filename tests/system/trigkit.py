"""Helpers of the trigger system tests: reading a topic from the test process."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

from fissile.triggers.mq.base import Message, broker_class
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
