"""The broker protocol behind message-queue triggers and ``fissile topic publish``.

A broker publishes to topics and hands out a durable subscription per consumer group (one group
per MQ trigger, named after it). Deliveries are at-least-once: a message handed out and not
acked before a crash or restart is delivered again. Implementations live one per module and are
imported only when their type is used, so an unused client library is never imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# How long connecting to a broker may take before start() gives up with a BrokerError.
CONNECT_TIMEOUT = 5.0


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
    """Made with its URL (``cls(url)``; the embedded broker: its file), then ``start()``ed.
    Options of fissile's own travel in the URL's query string (``split_options``)."""

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


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def split_options(url: str, names: Iterable[str]) -> tuple[str, dict[str, str]]:
    """Take fissile's own options (``names``) out of ``url``'s query string: the rest of the URL
    goes to the client library, which would refuse options it does not know."""
    parts = urlsplit(url)
    wanted = set(names)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in wanted:
            ours[key] = value
        else:
            theirs.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


def option(options: Mapping[str, str], name: str, default: float, url: str) -> float:
    """A positive number from the URL's options, or a BrokerError naming the option."""
    raw = options.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise BrokerError(f"{redact(url)}: option {name}={raw!r} must be a number >= 0")
    return value
