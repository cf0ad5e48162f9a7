"""Redis Streams: a stream per topic, a consumer group per subscription group.

A message is a stream entry: its body in the field ``body``, each header in a field of its own.
Entries a consumer read and did not ack stay in the group's pending entries list: a subscription
re-reads its own consumer's pending entries first (a restart), and claims entries another consumer
left pending longer than ``claim_idle`` seconds (a dead node) with XAUTOCLAIM.

URL options (query string, removed before redis-py sees the URL): ``consumer`` (this node's
consumer name in every group, default ``fissile``), ``claim_idle`` (seconds, default 30),
``maxlen`` (trim streams to about this many entries on publish; default: never trim).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

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

BODY = "body"
OPTIONS = ("consumer", "claim_idle", "maxlen")
# A blocked XREADGROUP answers within its BLOCK time; this much more and the server is gone.
GRACE = 5.0

T = TypeVar("T")


class RedisDelivery:
    __slots__ = ("_subscription", "message")

    def __init__(self, subscription: RedisSubscription, message: Message) -> None:
        self._subscription = subscription
        self.message = message

    async def ack(self) -> None:
        await self._subscription.ack(self.message.id)


class RedisBroker:
    mqtype = "redis"

    def __init__(self, url: str | None = None) -> None:
        self.url = url or DEFAULT_URLS["redis"]
        self._client_url, options = split_options(self.url, OPTIONS)
        self.consumer = options.get("consumer") or "fissile"
        self.claim_idle = option(options, "claim_idle", 30.0, self.url)
        maxlen = option(options, "maxlen", 0, self.url)
        self.maxlen = int(maxlen) if maxlen else None
        self._client: aioredis.Redis | None = None

    async def start(self) -> None:
        try:
            client = aioredis.Redis.from_url(
                self._client_url, socket_connect_timeout=CONNECT_TIMEOUT
            )
        except ValueError as exc:
            raise BrokerError(f"redis: bad URL {redact(self.url)}: {exc}") from None
        self._client = client
        await self.call("connect", client.ping(), CONNECT_TIMEOUT)

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise BrokerError("redis: the broker is not started")
        return self._client

    async def call(self, what: str, awaitable: Awaitable[T], timeout: float) -> T:
        """Await a redis-py call; connection trouble and timeouts become BrokerError."""
        try:
            # asyncio.timeout, not wait_for: no task per call on this hot path.
            async with asyncio.timeout(timeout):
                return await awaitable
        except TimeoutError:
            raise BrokerError(
                f"redis at {redact(self.url)}: {what} timed out after {timeout:g}s"
            ) from None
        except redis_errors.RedisError as exc:
            raise BrokerError(f"redis at {redact(self.url)}: {what} failed: {exc}") from exc
        except OSError as exc:
            raise BrokerError(f"redis at {redact(self.url)}: {what} failed: {exc}") from exc

    async def publish(
        self, topic: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        fields: dict[str | bytes, bytes | str] = {BODY: body}
        for name, value in (headers or {}).items():
            if name == BODY:
                raise BrokerError(f"redis: header name {BODY!r} is reserved for the body")
            fields[name] = value
        await self.call(
            f"XADD to {topic!r}",
            self.client.xadd(topic, fields, maxlen=self.maxlen),  # type: ignore[arg-type]
            CONNECT_TIMEOUT,
        )

    async def subscribe(self, topic: str, group: str) -> Subscription:
        subscription = RedisSubscription(self, topic, group)
        await subscription.create_group()
        return subscription

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class RedisSubscription:
    def __init__(self, broker: RedisBroker, topic: str, group: str) -> None:
        self.broker = broker
        self.topic = topic
        self.group = group
        # Our own pending entries are read once from the start of the list (a restart's backlog).
        self._backlog: str | None = "0"
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        # Handed out and not acked yet: XAUTOCLAIM may return them once they are idle long
        # enough (a slow function), and they must not run twice at once.
        self._inflight: set[str] = set()
        self._closed = False

    async def create_group(self) -> None:
        """A new group starts at the oldest entry the stream holds: nothing published before the
        trigger existed is skipped."""
        try:
            await self.broker.call(
                f"XGROUP CREATE {self.topic!r} {self.group!r}",
                self.broker.client.xgroup_create(self.topic, self.group, id="0", mkstream=True),
                CONNECT_TIMEOUT,
            )
        except BrokerError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        if self._closed:
            raise BrokerError(f"redis: the subscription of {self.group!r} is closed")
        count = max(1, max_messages)
        if self._backlog is not None:
            entries = await self._read({self.topic: self._backlog}, count, None)
            if entries:
                self._backlog = entries[-1][0].decode()
                return self._deliveries(entries, redelivered=True)
            self._backlog = None
        if time.monotonic() >= self._next_claim:
            claimed = [e for e in await self._claim(count) if e[0].decode() not in self._inflight]
            if claimed:
                return self._deliveries(claimed, redelivered=True)
        block = int(timeout * 1000) if timeout > 0 else None
        entries = await self._read({self.topic: ">"}, count, block or None)
        return self._deliveries(entries, redelivered=False)

    async def _read(
        self, streams: dict[str, str], count: int, block_ms: int | None
    ) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        client = self.broker.client
        wait = (block_ms or 0) / 1000 + GRACE
        what = f"XREADGROUP {self.group!r} on {self.topic!r}"
        try:
            reply = await self.broker.call(
                what,
                client.xreadgroup(self.group, self.broker.consumer, streams, count, block_ms),  # type: ignore[arg-type]
                wait,
            )
        except BrokerError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream or group was deleted under us: make the group again.
            await self.create_group()
            return []
        if not reply:
            return []
        answer: Any = reply
        # RESP3 (protocol=3 in the URL) answers a map of streams, RESP2 a list of pairs.
        entries: list[Any] = (
            next(iter(answer.values()))[0] if isinstance(answer, dict) else answer[0][1]
        )
        return [(entry_id, fields) for entry_id, fields in entries]

    async def _claim(self, count: int) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        """Entries other consumers left pending longer than ``claim_idle``: they died."""
        broker = self.broker
        reply = await broker.call(
            f"XAUTOCLAIM {self.group!r} on {self.topic!r}",
            broker.client.xautoclaim(
                self.topic,
                self.group,
                broker.consumer,
                int(broker.claim_idle * 1000),
                start_id=self._claim_cursor,
                count=count,
            ),
            CONNECT_TIMEOUT,
        )
        cursor, entries = reply[0], reply[1]
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if self._claim_cursor == "0-0":
            # A full pass over the pending list: the next one is due when entries can be stale.
            self._next_claim = time.monotonic() + min(max(broker.claim_idle / 2, 0.05), 5.0)
        return [(entry_id, fields) for entry_id, fields in entries]

    def _deliveries(
        self, entries: list[tuple[bytes, dict[bytes, bytes] | None]], redelivered: bool
    ) -> list[Delivery]:
        out: list[Delivery] = []
        for entry_id, fields in entries:
            ident = entry_id.decode()
            if not fields:
                # Trimmed or deleted while pending: nothing left to deliver.
                asyncio.get_running_loop().create_task(self._ack_quietly(ident))
                continue
            body = b""
            headers: dict[str, str] = {}
            for name, value in fields.items():
                key = name.decode(errors="replace")
                if key == BODY:
                    body = value
                else:
                    headers[key] = value.decode(errors="replace")
            message = Message(self.topic, body, headers, ident, redelivered)
            self._inflight.add(ident)
            out.append(RedisDelivery(self, message))
        return out

    async def ack(self, entry_id: str) -> None:
        await self.broker.call(
            f"XACK {self.group!r} on {self.topic!r}",
            self.broker.client.xack(self.topic, self.group, entry_id),
            CONNECT_TIMEOUT,
        )
        self._inflight.discard(entry_id)

    async def _ack_quietly(self, entry_id: str) -> None:
        try:
            await self.ack(entry_id)
        except BrokerError:
            pass

    async def close(self) -> None:
        # Unacked entries stay pending for this consumer name: the next subscription reads them.
        self._closed = True
