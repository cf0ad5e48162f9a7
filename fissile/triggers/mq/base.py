"""The broker protocol behind message-queue triggers and ``fissile topic publish``.

A broker publishes to topics and hands out a durable subscription per consumer group (one group
per MQ trigger, named after it). Deliveries are at-least-once: a message handed out and not
acked before a crash or restart is delivered again. Implementations live one per module and are
imported only when their type is used, so an unused client library is never imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class BrokerError(Exception):
    """The broker refused or could not be reached; the message says which and why."""


class MissingExtra(BrokerError):
    def __init__(self, mqtype: str, extra: str, module: str) -> None:
        super().__init__(
            f"mqtype {mqtype!r} needs the Python package {module!r}: pip install 'fissile[{extra}]'"
        )


@dataclass(slots=True)
class Message:
    topic: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    id: str = ""  # the broker's id of the message (stream id, offset, sequence…)
    redelivered: bool = False


class Delivery(Protocol):
    message: Message

    async def ack(self) -> None:
        """The outcome is recorded: never deliver this message again."""


class Subscription(Protocol):
    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries, waiting up to ``timeout`` seconds for the first."""

    async def close(self) -> None: ...


class Broker(Protocol):
    mqtype: str

    async def start(self) -> None:
        """Connect; raise BrokerError with a precise message when that fails."""

    async def publish(
        self, topic: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None: ...

    async def subscribe(self, topic: str, group: str) -> Subscription:
        """A durable subscription of consumer group ``group`` to ``topic``; unacked deliveries
        of an earlier subscription of the same group come again."""

    async def close(self) -> None: ...


# mqtype -> (module:class, pip extra, the client module the extra provides)
BROKERS: dict[str, tuple[str, str | None, str | None]] = {
    "embedded": ("fissile.triggers.mq.embedded:EmbeddedBroker", None, None),
    "redis": ("fissile.triggers.mq.redis:RedisBroker", "redis", "redis"),
    "nats": ("fissile.triggers.mq.nats:NatsBroker", "nats", "nats"),
    "rabbitmq": ("fissile.triggers.mq.rabbitmq:RabbitMQBroker", "rabbitmq", "aio_pika"),
    "kafka": ("fissile.triggers.mq.kafka:KafkaBroker", "kafka", "aiokafka"),
}

DEFAULT_URLS = {
    "redis": "redis://127.0.0.1:6379/0",
    "nats": "nats://127.0.0.1:4222",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    "kafka": "127.0.0.1:9092",
}


def broker_class(mqtype: str) -> type[Broker]:
    """The broker class for ``mqtype``, imported now (uvicorn's lazy-import habit)."""
    try:
        target, extra, client_module = BROKERS[mqtype]
    except KeyError:
        known = ", ".join(BROKERS)
        raise BrokerError(f"unknown mqtype {mqtype!r} (known: {known})") from None
    if client_module is not None:
        try:
            importlib.import_module(client_module)
        except ImportError:
            assert extra is not None
            raise MissingExtra(mqtype, extra, client_module) from None
    module_name, _, attr = target.partition(":")
    cls: type[Broker] = getattr(importlib.import_module(module_name), attr)
    return cls
