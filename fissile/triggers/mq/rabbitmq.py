"""RabbitMQ (AMQP 0-9-1): a durable queue per (topic, group), bound to one direct exchange.

Publishing sends a persistent message, with a publisher confirm, to the exchange with the topic
as routing key; the exchange copies it into the queue of every group subscribed to that topic
(``<group>@<topic>``, created on the group's first subscription). A subscription consumes its
queue with manual acks and a prefetch window; whatever it received and did not ack goes back
to the queue when its channel closes (a restart, a crash, a lost connection) and comes again
flagged as redelivered.

URL options (query string): ``exchange`` (default ``fissile``), ``prefetch`` (unacked
deliveries a subscription holds at most, default 100).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from fissile.triggers.mq.base import (
    CONNECT_TIMEOUT,
    DEFAULT_URLS,
    BrokerError,
    Delivery,
    Message,
    Subscription,
    option,
    redact,
    split_options,
)

OPTIONS = ("exchange", "prefetch")
FAILURES: tuple[type[BaseException], ...] = (
    aio_pika.exceptions.AMQPException,
    aiormq.exceptions.AMQPError,
    ConnectionError,
    OSError,
    TimeoutError,
    # aio-pika's word for "that connection or channel is closed (reconnecting)".
    RuntimeError,
)


def queue_name(topic: str, group: str) -> str:
    return f"{group}@{topic}"


class RabbitMQDelivery:
    __slots__ = ("_incoming", "_subscription", "message")

    def __init__(
        self, subscription: RabbitMQSubscription, incoming: AbstractIncomingMessage
    ) -> None:
        self._subscription = subscription
        self._incoming = incoming
        headers = {k: _text(v) for k, v in (incoming.headers or {}).items()}
        ident = incoming.message_id or str(incoming.delivery_tag)
        self.message = Message(
            subscription.topic, incoming.body, headers, ident, bool(incoming.redelivered)
        )

    async def ack(self) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self._incoming.ack()
        except FAILURES as exc:
            raise self._subscription.broker._error(
                f"ack on {self._subscription.queue!r}", exc
            ) from exc


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode(errors="replace")
    return str(value)


class RabbitMQBroker:
    mqtype = "rabbitmq"

    def __init__(self, url: str | None = None) -> None:
        self.url = url or DEFAULT_URLS["rabbitmq"]
        self._client_url, options = split_options(self.url, OPTIONS)
        self.exchange_name = options.get("exchange") or "fissile"
        self.prefetch = int(option(options, "prefetch", 100, self.url)) or 100
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._subscriptions: set[RabbitMQSubscription] = set()
        self._reconnecting = asyncio.Lock()
        self._closed = False

    def _error(self, what: str, exc: BaseException | str) -> BrokerError:
        cause = (str(exc) or type(exc).__name__) if isinstance(exc, BaseException) else exc
        return BrokerError(f"rabbitmq at {redact(self.url)}: {what}: {cause}")

    async def start(self) -> None:
        await self._connect("connect")

    async def _connect(self, what: str) -> None:
        """A new connection and publishing channel. (Not aio-pika's robust connection: after a
        dropped connection its channels could stay closed; here the next call connects again.)"""
        await self._drop_connection()
        try:
            self._connection = await asyncio.wait_for(
                aio_pika.connect(self._client_url, timeout=CONNECT_TIMEOUT), CONNECT_TIMEOUT * 2
            )
            self._channel = await self._connection.channel(publisher_confirms=True)
            self._exchange = await self._channel.declare_exchange(
                self.exchange_name, aio_pika.ExchangeType.DIRECT, durable=True
            )
        except FAILURES as exc:
            await self._drop_connection()
            raise self._error(what, exc) from exc

    async def _usable(self, what: str) -> AbstractExchange:
        """The publishing exchange, connecting again first if the connection was lost."""
        if self._closed:
            raise BrokerError("rabbitmq: the broker is closed")
        channel = self._channel
        if self._exchange is None or channel is None or channel.is_closed:
            async with self._reconnecting:
                channel = self._channel
                if self._exchange is None or channel is None or channel.is_closed:
                    await self._connect(what)
        assert self._exchange is not None
        return self._exchange

    @property
    def connection(self) -> AbstractConnection:
        if self._connection is None:
            raise BrokerError("rabbitmq: the broker is not started")
        return self._connection

    async def publish(
        self, topic: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        exchange = await self._usable(f"publish to {topic!r}")
        message = aio_pika.Message(
            body,
            headers=dict(headers or {}),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=uuid.uuid4().hex,
        )
        try:
            # No group subscribed yet means no queue bound: RabbitMQ drops the message (unlike
            # the log-based brokers, it keeps nothing for groups that do not exist yet).
            await exchange.publish(
                message, routing_key=topic, mandatory=False, timeout=CONNECT_TIMEOUT
            )
        except FAILURES as exc:
            raise self._error(f"publish to {topic!r}", exc) from exc

    async def subscribe(self, topic: str, group: str) -> Subscription:
        await self._usable(f"subscribe {queue_name(topic, group)!r}")
        subscription = RabbitMQSubscription(self, topic, group)
        try:
            await subscription.open()
        except FAILURES as exc:
            await subscription.close()
            raise self._error(f"subscribe {queue_name(topic, group)!r}", exc) from exc
        self._subscriptions.add(subscription)
        return subscription

    async def close(self) -> None:
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.close()
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        connection, self._connection, self._channel, self._exchange = (
            self._connection,
            None,
            None,
            None,
        )
        if connection is not None and not connection.is_closed:
            try:
                await asyncio.wait_for(connection.close(), CONNECT_TIMEOUT)
            except FAILURES:
                pass


class RabbitMQSubscription:
    def __init__(self, broker: RabbitMQBroker, topic: str, group: str) -> None:
        self.broker = broker
        self.topic = topic
        self.queue = queue_name(topic, group)
        self._received: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._channel: AbstractChannel | None = None
        self._amqp_queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._closed = False

    async def open(self) -> None:
        # A channel of its own: closing it hands back exactly this subscription's unacked ones.
        channel = await self.broker.connection.channel()
        self._channel = channel
        await channel.set_qos(prefetch_count=self.broker.prefetch)
        queue = await channel.declare_queue(self.queue, durable=True)
        await queue.bind(self.broker.exchange_name, routing_key=self.topic)
        self._amqp_queue = queue
        self._tag = await queue.consume(self._on_message)

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        self._received.put_nowait(incoming)

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        if self._closed:
            raise BrokerError(f"rabbitmq: the subscription of {self.queue!r} is closed")
        if self._channel is None or self._channel.is_closed:
            # Its unacked deliveries went back to the queue; subscribing again gets them.
            raise self.broker._error(f"consume {self.queue!r}", "the channel was closed")
        out: list[Delivery] = []
        if self._received.empty():
            try:
                first = await asyncio.wait_for(self._received.get(), max(timeout, 0))
            except TimeoutError:
                return out
            out.append(RabbitMQDelivery(self, first))
        while len(out) < max(1, max_messages) and not self._received.empty():
            out.append(RabbitMQDelivery(self, self._received.get_nowait()))
        return out

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.broker._subscriptions.discard(self)
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            try:
                # Closing the channel requeues what it received and did not ack.
                await asyncio.wait_for(channel.close(), CONNECT_TIMEOUT)
            except FAILURES:
                pass
