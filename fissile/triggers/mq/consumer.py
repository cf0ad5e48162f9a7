"""Message-queue triggers at run time: one consumer per trigger, following the store.

A consumer fetches from its topic (consumer group ``fissile-<trigger>``), calls the function
with each message, and acknowledges only once the outcome is recorded:

- a 2xx answer: its body is published to the response topic (if any), then the message is acked;
- a failure (non-2xx, timeout, crash, no instance): retried up to ``maxretries`` times with a
  short back-off; then a JSON report (error, status, attempts, the original message with its
  body in base64) is published to the error topic (if any), then the message is acked.
- the function busy (429: its queue is full; 503: no instance within its queue timeout): called
  again after a second, not counted as an attempt (the function did not run).

If recording fails (the response or error topic cannot be published), the message is not acked:
the broker delivers it again after a restart. A broker that cannot be reached leaves the
consumer in state ``error`` with the reason (``fissile mqt get``) and retried with back-off;
it never stops the platform.

A consumer can be paused (in a cluster, while its node is drained): it stops fetching, lets
the deliveries it holds finish (each acked as usual), then closes its subscription, so the
group's other members (the other nodes) take every message; resumed, it subscribes again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from fissile.executor import Executor
from fissile.executor.connection import InstanceResponse
from fissile.executor.errors import BUSY
from fissile.models import ConsumerStatus, MessageQueueTriggerSpec
from fissile.observability import tracing
from fissile.observability.tally import Tally
from fissile.router.invoke import TRACEPARENT, invoke
from fissile.router.proxy import Answer
from fissile.store import Change, Store
from fissile.triggers.mq.base import Broker, BrokerError, Delivery, Subscription
from fissile.triggers.mq.embedded import EmbeddedBroker
from fissile.triggers.mq.hub import BrokerHub

logger = logging.getLogger("fissile.mqt")

FETCH_WAIT = 1.0
RETRY_BASE = 0.1
RETRY_MAX = 2.0
# Before calling again a function that was busy (429, or 503 after its queue timeout): its
# Retry-After. Not an attempt: the message did not run, so it is not moved to the error topic.
BUSY_PAUSE = 1.0
RECONNECT_MAX = 30.0
DISCARD_AFTER = 3
ERROR_BODY_LIMIT = 4096

Invoker = Callable[..., Any]
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


def group_of(trigger: str) -> str:
    return f"fissile-{trigger}"


class Consumer:
    def __init__(
        self,
        spec: MessageQueueTriggerSpec,
        hub: BrokerHub,
        executor: Executor,
        invoker: Invoker = invoke,
        outcomes: Tally | None = None,
    ) -> None:
        self.spec = spec
        self.hub = hub
        self.executor = executor
        self.invoker = invoker
        # (trigger, outcome) -> messages; the manager's, so counts outlive a restart
        self.outcomes = outcomes if outcomes is not None else Tally()
        self.status = ConsumerStatus()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._resumed = asyncio.Event()  # clear while paused
        self._resumed.set()

    def start(self) -> None:
        self.status.state = "paused" if self.paused else "starting"
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    def pause(self) -> None:
        """Stop fetching; what was fetched finishes, then the subscription closes."""
        self._resumed.clear()
        self._room.set()  # a consumer waiting for room looks again

    def resume(self) -> None:
        self._resumed.set()

    async def stop(self) -> None:
        """Stop fetching; deliveries in flight are abandoned unacked (delivered again)."""
        tasks = [t for t in (self._task, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        self.status.state = "stopped"
        self.status.inflight = 0

    async def _run(self) -> None:
        spec = self.spec
        delay = 0.5
        failures = 0
        while True:
            if self.paused:
                self.status.state, self.status.error = "paused", None
                await self._resumed.wait()
                self.status.state = "starting"
                delay, failures = 0.5, 0
            subscription: Subscription | None = None
            broker: Broker | None = None
            try:
                broker = await self.hub.get(spec.mqtype, spec.broker_url)
                subscription = await broker.subscribe(spec.topic, group_of(spec.name))
                self.status.state, self.status.error = "running", None
                delay, failures = 0.5, 0
                await self._consume(subscription)
                continue  # paused: the subscription closes (below), then waits to resume
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                message = (
                    str(exc) if isinstance(exc, BrokerError) else f"{type(exc).__name__}: {exc}"
                )
                if self.status.error != message:
                    logger.warning("mq trigger %s: %s", spec.name, message)
                self.status.state, self.status.error = "error", message
                failures += 1
                if broker is not None and failures >= DISCARD_AFTER:
                    # Clients reconnect by themselves; one that keeps failing is replaced.
                    self.hub.discard(broker)
            finally:
                if subscription is not None:
                    try:
                        await subscription.close()
                    except Exception:
                        pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _consume(self, subscription: Subscription) -> None:
        """Fetch and hand out deliveries until paused; then return once the deliveries
        taken are done (acked while the subscription is still open)."""
        limit = self.spec.concurrency
        while not self.paused:
            room = limit - len(self._inflight)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            for delivery in await subscription.fetch(room, FETCH_WAIT):
                task = asyncio.get_running_loop().create_task(self._handle(delivery))
                self._inflight.add(task)
                task.add_done_callback(self._done)
            self.status.inflight = len(self._inflight)
        while self._inflight:
            self._room.clear()
            await self._room.wait()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self.status.inflight = len(self._inflight)
        self._room.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "mq trigger %s: delivery failed", self.spec.name, exc_info=task.exception()
            )

    async def _handle(self, delivery: Delivery) -> None:
        spec = self.spec
        message = delivery.message
        attempts = 0
        # Each attempt is a span whose parent is the publish's (the message's traceparent);
        # without one the delivery starts a trace, shared by its attempts and its outcome.
        hop = tracing.hop(message.headers.get(TRACEPARENT))
        while True:
            attempts += 1
            if attempts > 1:
                hop = hop.again()
            headers = {
                **_message_headers(message.headers),
                "x-fissile-trigger": "mqt",
                "x-fissile-trigger-name": spec.name,
                "x-fissile-topic": message.topic,
                "x-fissile-message-id": message.id,
                "x-fissile-redelivered": "true" if message.redelivered or attempts > 1 else "false",
                "x-fissile-attempt": str(attempts),
            }
            try:
                result = await self.invoker(
                    self.executor,
                    spec.function,
                    headers=headers,
                    body=message.body,
                    hop=hop,
                    span=f"deliver {message.topic} to",
                )
            except Exception as exc:  # a fault of the platform's own: an attempt that failed
                logger.exception("mq trigger %s: calling %s failed", spec.name, spec.function)
                result = Answer(500, "internal", f"{type(exc).__name__}: {exc}")
            if isinstance(result, Answer) and result.code in BUSY:
                attempts -= 1
                await asyncio.sleep(BUSY_PAUSE)
                continue
            if isinstance(result, InstanceResponse) and 200 <= result.status < 300:
                if spec.resptopic:
                    await self._record(
                        spec.resptopic,
                        result.body,
                        _response_headers(result, message.id, spec.function, hop),
                    )
                self.status.processed += 1
                self.outcomes.add(spec.name, "succeeded")
                break
            if attempts > spec.maxretries:
                if spec.errortopic:
                    report = _error_report(spec, message, result, attempts)
                    await self._record(
                        spec.errortopic,
                        report,
                        {
                            "content-type": "application/json",
                            "x-fissile-source-message-id": message.id,
                            TRACEPARENT: hop.traceparent,
                        },
                    )
                    self.outcomes.add(spec.name, "dead_lettered")
                else:
                    logger.warning(
                        "mq trigger %s: message %s failed %d times and has no error topic; dropped",
                        spec.name,
                        message.id,
                        attempts,
                    )
                    self.outcomes.add(spec.name, "dropped")
                self.status.failed += 1
                break
            self.outcomes.add(spec.name, "retried")
            await asyncio.sleep(min(RETRY_BASE * 2 ** (attempts - 1), RETRY_MAX))
        try:
            await delivery.ack()
        except BrokerError as exc:
            # The broker away (or restarting): at least once, the message may come again.
            logger.warning(
                "mq trigger %s: message %s handled but not acked (may come again): %s",
                spec.name,
                message.id,
                exc,
            )

    async def _record(self, topic: str, body: bytes, headers: dict[str, str]) -> None:
        """Publish an outcome, retrying until it is recorded: the message is acked only then."""
        delay = RETRY_BASE
        while True:
            try:
                await self.hub.publish(self.spec.mqtype, topic, body, headers, self.spec.broker_url)
            except BrokerError as exc:
                message = f"cannot record an outcome on {topic!r} (retrying): {exc}"
                if self.status.error != message:
                    logger.warning("mq trigger %s: %s", self.spec.name, message)
                self.status.error = message
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
            else:
                if self.status.error is not None and self.status.state == "running":
                    self.status.error = None
                return


def _message_headers(headers: dict[str, str]) -> dict[str, str]:
    """A message's own headers as request headers: valid names only (a broker may carry any
    bytes), and none of the platform's."""
    return {
        name: value
        for name, value in headers.items()
        if _TOKEN.fullmatch(name) and not name.lower().startswith("x-fissile-")
    }


def _response_headers(
    result: InstanceResponse, message_id: str, function: str, hop: tracing.Hop
) -> dict[str, str]:
    # The response continues the trace: its consumers' parent is the call that answered.
    headers = {
        "x-fissile-source-message-id": message_id,
        "x-fissile-function": function,
        TRACEPARENT: hop.traceparent,
    }
    for name, value in result.headers:
        if name.lower() == b"content-type":
            headers["content-type"] = value.decode("latin-1")
    return headers


def _error_report(
    spec: MessageQueueTriggerSpec, message: Any, result: InstanceResponse | Answer, attempts: int
) -> bytes:
    if isinstance(result, InstanceResponse):
        status = result.status
        detail = result.body[:ERROR_BODY_LIMIT].decode("utf-8", "replace")
        error = f"the function answered {status}"
    else:
        status = result.status
        detail = result.body[:ERROR_BODY_LIMIT].decode("utf-8", "replace")
        error = _answer_message(result) or f"the platform answered {status}"
    report = {
        "trigger": spec.name,
        "function": spec.function,
        "error": error,
        "status": status,
        "response": detail,
        "attempts": attempts,
        "message": {
            "topic": message.topic,
            "id": message.id,
            "headers": message.headers,
            "body_base64": base64.b64encode(message.body).decode(),
        },
    }
    return json.dumps(report).encode()


def _answer_message(answer: Answer) -> str | None:
    try:
        message = json.loads(answer.body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(message)


class ConsumerManager:
    """Starts, restarts and stops consumers as MQ triggers are created, updated and deleted."""

    def __init__(self, store: Store, hub: BrokerHub, executor: Executor) -> None:
        self.store = store
        self.hub = hub
        self.executor = executor
        self.consumers: dict[str, Consumer] = {}
        # (trigger, outcome) -> messages, since the platform started or the trigger was made
        self.outcomes = Tally()
        self._stopping = False
        self.paused = False  # every consumer's, made now or later (``pause``)

    def pause(self, paused: bool) -> None:
        """Pause (or resume) every consumer: in a cluster, while this node is drained, the
        other nodes consume the messages."""
        if paused == self.paused:
            return
        self.paused = paused
        for consumer in self.consumers.values():
            if paused:
                consumer.pause()
            else:
                consumer.resume()

    def start(self) -> None:
        for record in self.store.list("mqtriggers"):
            self._add(MessageQueueTriggerSpec.model_validate(record.data))
        self.store.subscribe(self._changed)

    def status(self, name: str) -> ConsumerStatus:
        consumer = self.consumers.get(name)
        return consumer.status if consumer is not None else ConsumerStatus()

    def _add(self, spec: MessageQueueTriggerSpec) -> None:
        consumer = Consumer(spec, self.hub, self.executor, outcomes=self.outcomes)
        if self.paused:
            consumer.pause()
        self.consumers[spec.name] = consumer
        consumer.start()

    def _changed(self, change: Change) -> None:
        if change.record.kind != "mqtriggers" or self._stopping:
            return
        old = self.consumers.pop(change.record.name, None)
        if change.action == "deleted":
            self.outcomes.forget(change.record.name)
            if old is not None:
                asyncio.get_running_loop().create_task(self._retire(old))
            return
        spec = MessageQueueTriggerSpec.model_validate(change.record.data)
        if old is not None and old.spec == spec:
            self.consumers[spec.name] = old
            return
        if old is None:
            self._add(spec)
            return

        async def restart() -> None:
            await old.stop()
            moved = (old.spec.mqtype, old.spec.topic) != (spec.mqtype, spec.topic)
            # A new topic: the old one's position is garbage (unless a later change, which
            # replaced the placeholder, went back to it).
            if moved and self.consumers.get(spec.name) is placeholder:
                await self._drop_durable(old.spec)
            if self.consumers.get(spec.name) is placeholder and not self._stopping:
                self.consumers.pop(spec.name)
                self._add(spec)

        # Keep a stopped placeholder so `mqt get` shows a status while the old one ends.
        placeholder = Consumer(spec, self.hub, self.executor)
        placeholder.status.state = "starting"
        self.consumers[spec.name] = placeholder
        asyncio.get_running_loop().create_task(restart())

    async def _retire(self, consumer: Consumer) -> None:
        """A deleted trigger: its consumer stops and, on the embedded broker, its group goes
        (its cursor would otherwise keep every later message of the topic)."""
        await consumer.stop()
        if consumer.spec.mqtype == "embedded" and consumer.spec.name not in self.consumers:
            broker = await self.hub.get("embedded")
            if isinstance(broker, EmbeddedBroker):
                broker.drop_group(group_of(consumer.spec.name))
            else:
                await self._drop_durable(consumer.spec)

    async def _drop_durable(self, spec: MessageQueueTriggerSpec) -> None:
        """In a cluster, the embedded type's group is a durable JetStream consumer on the NATS
        server: delete it, or it stays there, holding its position and the stream's
        messages' interest, for ever."""
        if spec.mqtype != "embedded" or self.hub.shared is None:
            return
        from fissile.triggers.mq.clustered import ClusterBroker

        try:
            broker = await self.hub.get("embedded")
            if isinstance(broker, ClusterBroker) and await broker.drop_group(
                spec.topic, group_of(spec.name)
            ):
                logger.info("mq trigger %s: its JetStream consumer deleted", spec.name)
        except Exception as exc:  # the trigger is gone either way: say what stays behind
            logger.warning(
                "mq trigger %s: its JetStream consumer was not deleted: %s", spec.name, exc
            )

    async def stop(self) -> None:
        self._stopping = True
        consumers, self.consumers = list(self.consumers.values()), {}
        await asyncio.gather(*(c.stop() for c in consumers))
