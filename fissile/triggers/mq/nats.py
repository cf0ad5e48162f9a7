"""NATS JetStream: a stream per topic (subject), a durable pull consumer per group.

A topic is a NATS subject. Publishing stores the message in the stream that covers the subject:
one the operator made, or else one fissile creates (file storage, named after the topic). Each
group is a durable pull consumer with explicit acks that starts, when first created, at the
oldest message the stream holds. A delivery not acked within ``ack_wait`` seconds is delivered
again; while a delivery is being worked on the subscription tells the server so
(``in_progress``) every half ``ack_wait``, so only a dead consumer's deliveries come back, and
closing a subscription hands its unacked deliveries back at once (``nak``). While the connection
is down (the client reconnects by itself) a publish is refused at once rather than kept by the
client and sent on reconnecting, after its caller was told it failed.

URL options (query string): ``ack_wait`` (seconds, default 30), ``max_ack_pending`` (default
1000).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Mapping
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext

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

OPTIONS = ("ack_wait", "max_ack_pending")
UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def jetstream_name(*parts: str) -> str:
    """A stream or consumer name for ``parts``: readable, and unique even when characters
    JetStream refuses in names (``.``, ``*``, ``>``, spaces…) had to be replaced."""
    raw = "_".join(parts)
    safe = UNSAFE.sub("_", raw)
    if safe != raw or len(safe) > 200:
        digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:10]
        safe = f"{safe[:180]}_{digest}"
    return safe


class NatsDelivery:
    __slots__ = ("_msg", "_subscription", "message")

    def __init__(self, subscription: NatsSubscription, msg: Msg, message: Message) -> None:
        self._subscription = subscription
        self._msg = msg
        self.message = message

    async def ack(self) -> None:
        await self._subscription.ack(self)


class NatsBroker:
    mqtype = "nats"

    def __init__(self, url: str | None = None) -> None:
        self.url = url or DEFAULT_URLS["nats"]
        self._client_url, options = split_options(self.url, OPTIONS)
        self.ack_wait = option(options, "ack_wait", 30.0, self.url) or 30.0
        self.max_ack_pending = int(option(options, "max_ack_pending", 1000, self.url)) or 1000
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._streams: dict[str, str] = {}
        self._subscriptions: set[NatsSubscription] = set()

    def _error(self, what: str, exc: BaseException | str) -> BrokerError:
        if isinstance(exc, BaseException):
            # nats-py's errors often have no text (TimeoutError()): name the kind then.
            exc = str(exc) or type(exc).__name__
        return BrokerError(f"nats at {redact(self.url)}: {what}: {exc}")

    async def start(self) -> None:
        failures: list[Exception] = []

        async def remember(exc: Exception) -> None:
            # Once started the client reconnects on its own; failures surface on the next call.
            failures.append(exc)
            del failures[:-1]

        try:
            # One quick retry on the first connect (the client's default would retry forever)...
            nc = await asyncio.wait_for(
                nats.connect(
                    self._client_url,
                    connect_timeout=CONNECT_TIMEOUT,
                    allow_reconnect=False,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0.1,
                    error_cb=remember,
                ),
                CONNECT_TIMEOUT * 2,
            )
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            cause = failures[-1] if failures else exc
            raise self._error("connect", str(cause) or type(cause).__name__) from exc
        # ...and reconnect forever once connected: a broker restart must not stop triggers.
        nc.options.update(allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        self._nc = nc
        self._js = nc.jetstream(timeout=CONNECT_TIMEOUT)
        try:
            await self._js.account_info()
        except (nats.errors.Error, TimeoutError) as exc:
            await self.close()
            raise self._error("JetStream is not enabled on this server", exc) from exc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise BrokerError("nats: the broker is not started")
        return self._js

    async def stream_for(self, topic: str) -> str:
        """The stream that stores ``topic``: an existing one covering it, or a new one."""
        if topic in self._streams:
            return self._streams[topic]
        try:
            try:
                name = await self.js.find_stream_name_by_subject(topic)
            except nats.js.errors.NotFoundError:
                name = jetstream_name("fissile", topic)
                config = StreamConfig(name=name, subjects=[topic], storage=StorageType.FILE)
                try:
                    await self.js.add_stream(config)
                except nats.js.errors.BadRequestError as exc:
                    # Another client created it first; anything else (a subject overlap…)
                    # is an error with JetStream's own description.
                    if exc.err_code != 10058:  # stream name already in use
                        raise
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._error(f"stream for topic {topic!r}", exc) from exc
        self._streams[topic] = name
        return name

    async def publish(
        self, topic: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        if self._nc is not None and not self._nc.is_connected:
            # While it reconnects the client would buffer the message and send it once back,
            # after this call had failed with a timeout: the caller, told it was not published,
            # would find it stored after all. Refuse it now instead.
            raise self._error(f"publish to {topic!r}", "not connected (reconnecting); not sent")
        await self.stream_for(topic)
        try:
            try:
                await self.js.publish(topic, body, headers=dict(headers) if headers else None)
            except nats.js.errors.NoStreamResponseError:
                # The stream was deleted since we looked it up: find or make it again.
                self._streams.pop(topic, None)
                await self.stream_for(topic)
                await self.js.publish(topic, body, headers=dict(headers) if headers else None)
        except TimeoutError as exc:
            # Sent but not confirmed (the connection died meanwhile, or the server is slow).
            raise self._error(
                f"publish to {topic!r}", "no confirmation in time; may be stored"
            ) from exc
        except nats.errors.Error as exc:
            raise self._error(f"publish to {topic!r}", exc) from exc

    async def subscribe(self, topic: str, group: str) -> Subscription:
        stream = await self.stream_for(topic)
        durable = jetstream_name(group, topic)
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=topic,
            max_ack_pending=self.max_ack_pending,
        )
        try:
            pull = await self.js.pull_subscribe(
                topic, durable=durable, stream=stream, config=config
            )
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._error(f"consumer {durable!r} on stream {stream!r}", exc) from exc
        subscription = NatsSubscription(self, topic, pull)
        self._subscriptions.add(subscription)
        return subscription

    async def drop_group(self, topic: str, group: str) -> bool:
        """Delete ``group``'s durable consumer of ``topic`` (its position and unacked
        deliveries); whether there was one. The stream and its messages stay."""
        durable = jetstream_name(group, topic)
        try:
            try:
                stream = self._streams.get(topic) or await self.js.find_stream_name_by_subject(
                    topic
                )
                await self.js.delete_consumer(stream, durable)
            except nats.js.errors.NotFoundError:
                return False  # no stream, or no such consumer (another node deleted it)
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._error(f"deleting consumer {durable!r}", exc) from exc
        return True

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.close()
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), CONNECT_TIMEOUT)
            except (nats.errors.Error, TimeoutError, OSError):  # OSError: NATS away
                pass


class NatsSubscription:
    def __init__(
        self, broker: NatsBroker, topic: str, pull: JetStreamContext.PullSubscription
    ) -> None:
        self.broker = broker
        self.topic = topic
        self._pull = pull
        self._inflight: dict[int, NatsDelivery] = {}
        self._keepalive: asyncio.Task[None] | None = None
        self._closed = False

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        if self._closed:
            raise BrokerError(f"nats: the subscription to {self.topic!r} is closed")
        try:
            msgs = await self._pull.fetch(max(1, max_messages), max(timeout, 0.01))
        except TimeoutError:  # nats.errors.TimeoutError is one too: nothing came in time
            return []
        except nats.errors.Error as exc:
            raise self.broker._error(f"fetch from {self.topic!r}", exc) from exc
        out: list[Delivery] = []
        for msg in msgs:
            meta = msg.metadata
            headers = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")}
            message = Message(
                self.topic,
                msg.data,
                headers,
                str(meta.sequence.stream),
                meta.num_delivered > 1,
            )
            delivery = NatsDelivery(self, msg, message)
            self._inflight[id(delivery)] = delivery
            out.append(delivery)
        if self._inflight and self._keepalive is None:
            self._keepalive = asyncio.get_running_loop().create_task(self._work_in_progress())
        return out

    async def ack(self, delivery: NatsDelivery) -> None:
        try:
            await delivery._msg.ack_sync(timeout=CONNECT_TIMEOUT)
        except (nats.errors.Error, TimeoutError) as exc:
            raise self.broker._error(f"ack on {self.topic!r}", exc) from exc
        finally:
            # Acked, or the ack failed (NATS away): either way no longer worked on. Telling the
            # server it still is would keep a delivery whose ack was lost from coming again.
            self._inflight.pop(id(delivery), None)

    def _pulled_not_handed_out(self) -> list[Msg]:
        """Messages a fetch that timed out pulled in late: the server counts them as delivered.
        (nats-py keeps them in its subscription's queue; no public API reaches them.)"""
        queue = getattr(getattr(self._pull, "_sub", None), "_pending_queue", None)
        pulled: list[Msg] = []
        while isinstance(queue, asyncio.Queue) and not queue.empty():
            msg = queue.get_nowait()
            if isinstance(msg, Msg) and msg.reply and msg.reply.startswith("$JS.ACK."):
                pulled.append(msg)
        return pulled

    async def _work_in_progress(self) -> None:
        """Tell the server every half ack_wait that deliveries being worked on are alive."""
        try:
            while not self._closed:
                await asyncio.sleep(self.broker.ack_wait / 2)
                for delivery in list(self._inflight.values()):
                    await _quietly(delivery._msg.in_progress())
        except asyncio.CancelledError:
            pass

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.broker._subscriptions.discard(self)
        if self._keepalive is not None:
            self._keepalive.cancel()
            await asyncio.gather(self._keepalive, return_exceptions=True)
        # Hand unacked deliveries back now rather than after ack_wait.
        for delivery in list(self._inflight.values()):
            await _quietly(delivery._msg.nak())
        self._inflight.clear()
        for msg in self._pulled_not_handed_out():
            await _quietly(msg.nak())
        await _quietly(self._pull.unsubscribe())


async def _quietly(awaitable: Any) -> None:
    try:
        await asyncio.wait_for(awaitable, CONNECT_TIMEOUT)
    except (nats.errors.Error, TimeoutError, OSError):
        pass
