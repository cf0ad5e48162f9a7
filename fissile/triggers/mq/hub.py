"""The platform's broker connections: one per (mqtype, URL), made on first use and shared by
the MQ consumers, ``fissile topic publish`` and functions' ``context.publish``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from fissile.triggers.mq.base import (
    BROKERS,
    DEFAULT_URLS,
    Broker,
    BrokerError,
    Message,
    MissingExtra,
    broker_class,
    redact,
)


class Refused(Exception):
    """A publish from outside the platform (API, function) that could not be done: ``status``
    is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def broker_url(mqtype: str, url: str | None) -> str:
    if url:
        return url
    try:
        return DEFAULT_URLS[mqtype]
    except KeyError:
        raise BrokerError(f"mqtype {mqtype!r} needs a broker URL") from None


class BrokerHub:
    def __init__(self, embedded_path: Path, shared: tuple[str, str] | None = None) -> None:
        self.embedded_path = embedded_path
        # In a cluster: (NATS URL, subject prefix) the embedded type maps onto (clustered.py).
        self.shared = shared
        self._brokers: dict[tuple[str, str], Broker] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def get(self, mqtype: str, url: str | None = None) -> Broker:
        """The connected broker for ``mqtype`` at ``url`` (its local default when unset);
        raises BrokerError (or MissingExtra) with the reason it cannot be had."""
        if mqtype == "embedded":
            if url:
                raise BrokerError("the embedded broker takes no broker URL")
            key = (mqtype, self.shared[0] if self.shared else str(self.embedded_path))
        else:
            key = (mqtype, broker_url(mqtype, url))
        broker = self._brokers.get(key)
        if broker is not None:
            return broker
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            broker = self._brokers.get(key)
            if broker is None:
                if mqtype == "embedded" and self.shared is not None:
                    from fissile.triggers.mq.clustered import ClusterBroker

                    broker = ClusterBroker(*self.shared)
                else:
                    cls = broker_class(mqtype)
                    broker = cls(key[1])  # type: ignore[call-arg]
                try:
                    await broker.start()
                except BrokerError:
                    raise
                except Exception as exc:
                    # The client's own message may quote the URL too, password and all.
                    cause = str(exc).replace(key[1], redact(key[1]))
                    raise BrokerError(f"{mqtype} broker at {redact(key[1])}: {cause}") from exc
                self._brokers[key] = broker
        return broker

    def discard(self, broker: Broker) -> None:
        """Close a broker that keeps failing; the next ``get`` connects again."""
        for key, known in list(self._brokers.items()):
            if known is broker:
                del self._brokers[key]
                task = asyncio.get_running_loop().create_task(_close_quietly(broker))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    async def publish(
        self,
        mqtype: str,
        topic: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        url: str | None = None,
    ) -> None:
        broker = await self.get(mqtype, url)
        try:
            await broker.publish(topic, body, headers or {})
        except BrokerError:
            raise
        except Exception as exc:
            raise BrokerError(f"{mqtype}: cannot publish to {topic!r}: {exc}") from exc

    async def close(self) -> None:
        brokers, self._brokers = list(self._brokers.values()), {}
        for broker in brokers:
            await _close_quietly(broker)
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=5.0)

    async def deliver(
        self, mqtype: str, topic: str, body: bytes, headers: dict[str, str], url: str | None
    ) -> None:
        """``publish`` for callers outside the platform: refusals carry an HTTP status."""
        _check(mqtype, url)
        try:
            await self.publish(mqtype, topic, body, headers, url)
        except MissingExtra as exc:
            raise Refused(422, "missing_extra", str(exc)) from None
        except BrokerError as exc:
            raise Refused(502, "broker_unavailable", str(exc)) from None

    async def take(
        self, mqtype: str, topic: str, group: str, count: int, wait: float, url: str | None
    ) -> list[Message]:
        """Up to ``count`` messages of ``topic`` for consumer group ``group``, acked (what
        ``fissile topic consume`` shows); waits up to ``wait`` seconds for the first."""
        _check(mqtype, url)
        try:
            broker = await self.get(mqtype, url)
            subscription = await broker.subscribe(topic, group)
            try:
                deliveries = await subscription.fetch(count, wait)
                for delivery in deliveries:
                    await delivery.ack()
            finally:
                await subscription.close()
        except MissingExtra as exc:
            raise Refused(422, "missing_extra", str(exc)) from None
        except BrokerError as exc:
            raise Refused(502, "broker_unavailable", str(exc)) from None
        return [delivery.message for delivery in deliveries]


def _check(mqtype: str, url: str | None) -> None:
    if mqtype not in BROKERS:
        known = ", ".join(BROKERS)
        raise Refused(422, "invalid", f"unknown mqtype {mqtype!r} (known: {known})")
    if mqtype == "embedded" and url:
        raise Refused(422, "invalid", "the embedded broker takes no broker URL")


async def _close_quietly(broker: Broker) -> None:
    try:
        await broker.close()
    except Exception:  # closing a broken connection: nothing left to do
        pass
