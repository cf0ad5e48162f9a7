"""The platform's internal event bus: in-process publish/subscribe of platform events.

Publishers (the store, the executor, async invocations) never wait for subscribers: each
handler runs as its own task, so a slow watch trigger cannot hold up an instance crash report.
Event types are dotted names (``function.created``, ``instance.crashed``,
``invocation.completed``, ``node.started``); a subscription names one type, a glob
(``function.*``) or ``*``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

logger = logging.getLogger("fissile.events")

EVENT_TYPES = (
    "function.created",
    "function.updated",
    "function.deleted",
    "instance.crashed",
    "invocation.completed",
    "node.started",
)

Handler = Callable[["Event"], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "time": self.time.isoformat(), "data": self.data}


class EventBus:
    def __init__(self) -> None:
        self._subscriptions: list[tuple[str, Handler]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def subscribe(self, pattern: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler`` for every event whose type matches ``pattern``; returns the
        function that ends the subscription."""
        entry = (pattern, handler)
        self._subscriptions.append(entry)

        def unsubscribe() -> None:
            try:
                self._subscriptions.remove(entry)
            except ValueError:
                pass

        return unsubscribe

    def publish(
        self, type: str, data: dict[str, Any] | None = None, id: str | None = None
    ) -> Event:
        """``id``: the event's, when every node of a cluster must publish it as one event."""
        event = Event(type, data or {}) if id is None else Event(type, data or {}, id)
        for pattern, handler in list(self._subscriptions):
            if pattern == "*" or pattern == type or fnmatch.fnmatchcase(type, pattern):
                self._dispatch(handler, event)
        return event

    def _dispatch(self, handler: Handler, event: Event) -> None:
        try:
            result = handler(event)
        except Exception:
            logger.exception("event handler failed on %s", event.type)
            return
        if result is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(_run(result, event))
        except RuntimeError:  # no loop (a synchronous caller in a test): drop, do not hang
            result.close()  # type: ignore[attr-defined]
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for running handlers (a stopping platform lets them finish)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)


async def _run(awaitable: Awaitable[None], event: Event) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("event handler failed on %s", event.type)
