"""Kafka (and Kafka-protocol brokers such as Tansu) through aiokafka: a consumer group per group.

A topic is a Kafka topic, created on first use with ``partitions`` partitions. A subscription is
a group member with auto-commit off: an offset is committed only once every delivery before it
on its partition is acked (the highest contiguous acked offset), so acks that come out of order,
as they do when several deliveries run at once, never skip a message. Acks arriving while a
commit is in flight share the next one. After a restart or a rebalance the group resumes from
its committed offsets, so whatever was delivered and not acked comes again.

Kafka has no "redelivered" flag. Each subscription records how far it has delivered on each
partition as the committed offsets of a second group, ``<group>.delivered`` (offset metadata
would be the natural place, but not every Kafka-protocol broker keeps it); a message below that
mark when its partition is (re)assigned is flagged redelivered. The mark is written in the
background after each fetch: it is a hint, never a reason to hold a message back.

URL: ``kafka://host:port[,host:port…]`` or plain ``host:port``. Options (query string):
``partitions`` and ``replication`` (for topics fissile creates, default 1 and 1),
``session_timeout_ms`` (default 10000), ``heartbeat_interval_ms`` (default 3000),
``fetch_max_wait_ms`` (default 500). The idempotent producer is off: Tansu lacks it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# aiokafka ships no type information.
import aiokafka.errors  # type: ignore[import-untyped]
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.abc import ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

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

OPTIONS = (
    "partitions",
    "replication",
    "session_timeout_ms",
    "heartbeat_interval_ms",
    "fetch_max_wait_ms",
)
MARKS_SUFFIX = ".delivered"
TOPIC_EXISTS = 36
FAILURES: tuple[type[BaseException], ...] = (aiokafka.errors.KafkaError, OSError, TimeoutError)


def bootstrap_servers(url: str) -> str:
    """``host:port[,host:port…]`` of a ``kafka://`` URL (or of a bare ``host:port`` list)."""
    if "://" in url:
        url = url.split("://", 1)[1]
    return url.split("?", 1)[0].split("/", 1)[0]


@dataclass(slots=True)
class Partition:
    """What one subscription knows of one assigned partition."""

    committed: int  # the group's committed offset: where a restart resumes
    prior_mark: int  # delivered up to here before this assignment: below it is a redelivery
    mark: int  # delivered up to here (exclusive)
    target: int = -1  # the offset the next commit takes this partition to
    outstanding: deque[int] = field(default_factory=deque)  # delivered, in offset order
    acked: set[int] = field(default_factory=set)  # acked, not yet contiguous


class KafkaDelivery:
    __slots__ = ("_part", "_subscription", "_tp", "message")

    def __init__(
        self,
        subscription: KafkaSubscription,
        tp: TopicPartition,
        part: Partition,
        message: Message,
    ) -> None:
        self._subscription = subscription
        self._tp = tp
        self._part = part
        self.message = message

    async def ack(self) -> None:
        await self._subscription.ack(self._tp, self._part, int(self.message.id.rsplit(":", 1)[1]))


class KafkaBroker:
    mqtype = "kafka"

    def __init__(self, url: str | None = None) -> None:
        self.url = url or DEFAULT_URLS["kafka"]
        _, options = split_options(
            self.url if "://" in self.url else f"kafka://{self.url}", OPTIONS
        )
        self.servers = bootstrap_servers(self.url)
        self.partitions = int(option(options, "partitions", 1, self.url)) or 1
        self.replication = int(option(options, "replication", 1, self.url)) or 1
        self.session_timeout_ms = int(option(options, "session_timeout_ms", 10000, self.url))
        self.heartbeat_interval_ms = int(option(options, "heartbeat_interval_ms", 3000, self.url))
        # How long the broker may hold an empty fetch. Kafka answers a held fetch as soon as a
        # message arrives; Tansu holds it to the end, so there it is what a message may wait
        # (tests and benchmarks on Tansu use 100).
        self.fetch_max_wait_ms = int(option(options, "fetch_max_wait_ms", 500, self.url))
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._topics: set[str] = set()
        self._subscriptions: set[KafkaSubscription] = set()

    def _error(self, what: str, exc: BaseException | str) -> BrokerError:
        cause = (str(exc) or type(exc).__name__) if isinstance(exc, BaseException) else exc
        return BrokerError(f"kafka at {redact(self.url)}: {what}: {cause}")

    async def start(self) -> None:
        timeout_ms = int(CONNECT_TIMEOUT * 1000)
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self.servers, request_timeout_ms=timeout_ms, client_id="fissile"
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.servers,
            acks="all",
            enable_idempotence=False,
            request_timeout_ms=timeout_ms,
            client_id="fissile",
        )
        try:
            await asyncio.wait_for(self._admin.start(), CONNECT_TIMEOUT * 2)
            await asyncio.wait_for(self._producer.start(), CONNECT_TIMEOUT * 2)
        except FAILURES as exc:
            await self.close()
            raise self._error("connect", exc) from exc

    async def ensure_topic(self, topic: str) -> None:
        if topic in self._topics:
            return
        if self._admin is None:
            raise BrokerError("kafka: the broker is not started")
        try:
            reply: Any = await asyncio.wait_for(
                self._admin.create_topics([NewTopic(topic, self.partitions, self.replication)]),
                CONNECT_TIMEOUT * 2,
            )
        except FAILURES as exc:
            raise self._error(f"create topic {topic!r}", exc) from exc
        for _name, code, *rest in reply.topic_errors:
            if code not in (0, TOPIC_EXISTS):
                message = rest[0] if rest else ""
                raise self._error(f"create topic {topic!r}", f"error {code} {message or ''}")
        self._topics.add(topic)

    async def publish(
        self, topic: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        if self._producer is None:
            raise BrokerError("kafka: the broker is not started")
        await self.ensure_topic(topic)
        pairs = [(name, value.encode()) for name, value in (headers or {}).items()]
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT * 2):
                await self._producer.send_and_wait(topic, body, headers=pairs or None)
        except FAILURES as exc:
            raise self._error(f"publish to {topic!r}", exc) from exc

    async def subscribe(self, topic: str, group: str) -> Subscription:
        await self.ensure_topic(topic)
        subscription = KafkaSubscription(self, topic, group)
        try:
            await subscription.open()
        except FAILURES as exc:
            await subscription.close()
            raise self._error(f"subscribe group {group!r} to {topic!r}", exc) from exc
        self._subscriptions.add(subscription)
        return subscription

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.close()
        producer, admin, self._producer, self._admin = self._producer, self._admin, None, None
        for client in (producer, admin):
            if client is not None:
                with contextlib.suppress(*FAILURES):
                    await asyncio.wait_for(
                        client.stop() if isinstance(client, AIOKafkaProducer) else client.close(),
                        CONNECT_TIMEOUT,
                    )


class _Revocations(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, subscription: KafkaSubscription) -> None:
        self.subscription = subscription

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Deliveries from a revoked partition go to its next owner again (at-least-once);
        # their acks here are moot.
        for tp in revoked:
            self.subscription.parts.pop(tp, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        pass


class KafkaSubscription:
    def __init__(self, broker: KafkaBroker, topic: str, group: str) -> None:
        self.broker = broker
        self.topic = topic
        self.group = group
        self.parts: dict[TopicPartition, Partition] = {}
        common: dict[str, Any] = {
            "bootstrap_servers": broker.servers,
            "enable_auto_commit": False,
            "client_id": "fissile",
            "request_timeout_ms": int(CONNECT_TIMEOUT * 1000) * 2,
        }
        self._consumer = AIOKafkaConsumer(
            group_id=group,
            # A new group starts at the oldest message the topic holds: nothing published
            # before the trigger existed is skipped.
            auto_offset_reset="earliest",
            session_timeout_ms=broker.session_timeout_ms,
            heartbeat_interval_ms=broker.heartbeat_interval_ms,
            fetch_max_wait_ms=broker.fetch_max_wait_ms,
            **common,
        )
        # Only commits and reads offsets (its partitions stay paused): the delivery marks.
        self._marks = AIOKafkaConsumer(group_id=group + MARKS_SUFFIX, **common)
        self._started: list[AIOKafkaConsumer] = []
        self._marks_dirty = False
        self._marks_task: asyncio.Task[None] | None = None
        self._commit_round: asyncio.Future[None] | None = None
        self._committer: asyncio.Task[None] | None = None
        self._closed = False

    async def open(self) -> None:
        for consumer in (self._consumer, self._marks):
            await asyncio.wait_for(consumer.start(), CONNECT_TIMEOUT * 2)
            self._started.append(consumer)
        # Joining the group goes on in the background; the first fetches wait for it.
        self._consumer.subscribe([self.topic], listener=_Revocations(self))

    async def _prepare_assigned(self) -> None:
        new = [tp for tp in self._consumer.assignment() if tp not in self.parts]
        for tp in new:
            await self._prepare(tp)

    async def _prepare(self, tp: TopicPartition, first_offset: int | None = None) -> Partition:
        committed = await self._consumer.committed(tp)
        if committed is None:
            # A new group: it starts where the first fetch does (the oldest message held).
            committed = (
                first_offset if first_offset is not None else await self._consumer.position(tp)
            )
        assigned = set(self._marks.assignment()) | {tp}
        self._marks.assign(list(assigned))
        self._marks.pause(*assigned)
        mark = await self._marks.committed(tp) or 0
        part = Partition(committed=committed, prior_mark=mark, mark=max(mark, committed))
        part.target = committed
        self.parts[tp] = part
        return part

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        if self._closed:
            raise BrokerError(f"kafka: the subscription of {self.group!r} is closed")
        try:
            await self._prepare_assigned()
            batch = await self._consumer.getmany(
                timeout_ms=max(0, int(timeout * 1000)), max_records=max(1, max_messages)
            )
        except FAILURES as exc:
            raise self.broker._error(f"fetch {self.group!r} from {self.topic!r}", exc) from exc
        out: list[Delivery] = []
        for tp, records in batch.items():
            part = self.parts.get(tp) or await self._prepare(tp, records[0].offset)
            for record in records:
                out.append(self._delivery(tp, part, record))
            part.mark = max(part.mark, records[-1].offset + 1)
            self._marks_dirty = True
        if self._marks_dirty and self._marks_task is None:
            self._marks_task = asyncio.get_running_loop().create_task(self._write_marks())
        return out

    def _delivery(
        self, tp: TopicPartition, part: Partition, record: ConsumerRecord
    ) -> KafkaDelivery:
        headers = {name: bytes(value).decode(errors="replace") for name, value in record.headers}
        part.outstanding.append(record.offset)
        message = Message(
            self.topic,
            record.value if record.value is not None else b"",
            headers,
            f"{tp.partition}:{record.offset}",
            record.offset < part.prior_mark,
        )
        return KafkaDelivery(self, tp, part, message)

    async def _write_marks(self) -> None:
        try:
            while self._marks_dirty:
                self._marks_dirty = False
                marks = {tp: part.mark for tp, part in self.parts.items()}
                with contextlib.suppress(*FAILURES):
                    await self._marks.commit(marks)
        finally:
            self._marks_task = None

    async def ack(self, tp: TopicPartition, part: Partition, offset: int) -> None:
        if self.parts.get(tp) is not part:
            return  # revoked since: the partition's next owner gets it again
        part.acked.add(offset)
        advanced = False
        while part.outstanding and part.outstanding[0] in part.acked:
            done = part.outstanding.popleft()
            part.acked.discard(done)
            part.target = done + 1
            advanced = True
        if advanced:
            await self._commit()

    async def _commit(self) -> None:
        """Group commit: wait for a commit that starts after this call, sharing it with the
        acks that arrive meanwhile."""
        if self._commit_round is None:
            self._commit_round = asyncio.get_running_loop().create_future()
        waiting = self._commit_round
        if self._committer is None:
            self._committer = asyncio.get_running_loop().create_task(self._run_commits())
        await asyncio.shield(waiting)

    async def _run_commits(self) -> None:
        try:
            while self._commit_round is not None:
                done, self._commit_round = self._commit_round, None
                offsets = {
                    tp: part.target
                    for tp, part in self.parts.items()
                    if part.target > part.committed
                }
                try:
                    if offsets:
                        await self._consumer.commit(offsets)
                except (aiokafka.errors.CommitFailedError, aiokafka.errors.IllegalStateError):
                    # A rebalance took the partition: its next owner starts from the last
                    # commit, so the acked deliveries may come again (at-least-once).
                    done.set_result(None)
                    continue
                except FAILURES as exc:
                    done.set_exception(self.broker._error(f"commit {self.group!r}", exc))
                    continue
                for tp, offset in offsets.items():
                    part = self.parts.get(tp)
                    if part is not None:
                        part.committed = max(part.committed, offset)
                done.set_result(None)
        finally:
            self._committer = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.broker._subscriptions.discard(self)
        for task in (self._marks_task, self._committer):
            if task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(task), CONNECT_TIMEOUT)
        for consumer in reversed(self._started):
            with contextlib.suppress(*FAILURES):
                await asyncio.wait_for(consumer.stop(), CONNECT_TIMEOUT)
