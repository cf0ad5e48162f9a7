"""Platform-event (watch) triggers: a function called with each platform event it watches.

The event arrives as a JSON body (``{"id", "type", "time", "data"}``) with the headers
``X-Fissile-Trigger: watch``, ``X-Fissile-Trigger-Name`` and ``X-Fissile-Event-Type``. Delivery
is at most once: events live in memory only, and a watcher that fails is logged, not retried.
A watcher is never called for an ``instance.crashed`` of its own function, which would turn a
crashing watcher into a loop.

This module also turns store changes of functions into ``function.created``,
``function.updated`` and ``function.deleted`` events.

In a cluster every node sees every change and every node runs every watch trigger: a change's
event has the same id on every node (derived from the change), and each delivery is claimed in
PostgreSQL first (``claims.py``), so a watch is called once per event across the cluster. A
drained node claims a change's event only a few seconds late, if no serving node did; the
events only it sees (``instance.crashed`` of its instances, ...) it claims at once, as before.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from fissile.events import Event, EventBus
from fissile.executor import Executor
from fissile.executor.connection import InstanceResponse
from fissile.models import WatchTriggerSpec
from fissile.observability import tracing
from fissile.router.invoke import invoke
from fissile.store import Change, Store

if TYPE_CHECKING:
    from fissile.triggers.claims import SharedClaims

logger = logging.getLogger("fissile.watch")


def change_id(change: Change) -> str:
    """The id every node gives the event of ``change``: a function deleted and made again
    has another creation time, so its events have other ids."""
    record = change.record
    key = f"{record.kind}\0{record.name}\0{record.generation}\0{change.action}"
    key += f"\0{record.created_at.timestamp():.6f}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


# The events every node of a cluster publishes (under one id), as opposed to those of one
# node's own doings, which only that node sees.
SHARED_EVENTS = frozenset({"function.created", "function.updated", "function.deleted"})


def publish_function_changes(store: Store, events: EventBus, shared: bool = False) -> None:
    def changed(change: Change) -> None:
        if change.record.kind != "functions":
            return
        data = {"function": change.record.name, "generation": change.record.generation}
        if change.action != "deleted":
            data["env"] = change.record.data.get("env")
            data["package"] = change.record.data.get("package")
        events.publish(f"function.{change.action}", data, change_id(change) if shared else None)

    store.subscribe(changed)


class WatchService:
    def __init__(
        self,
        store: Store,
        events: EventBus,
        executor: Executor,
        claims: SharedClaims | None = None,
    ) -> None:
        self.store = store
        self.claims = claims
        self.events = events
        self.executor = executor
        self.watches: dict[str, WatchTriggerSpec] = {}
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        for record in self.store.list("watchtriggers"):
            spec = WatchTriggerSpec.model_validate(record.data)
            self.watches[spec.name] = spec
        self.store.subscribe(self._changed)
        self._unsubscribe = self.events.subscribe("*", self._event)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _changed(self, change: Change) -> None:
        if change.record.kind != "watchtriggers":
            return
        if change.action == "deleted":
            self.watches.pop(change.record.name, None)
        else:
            self.watches[change.record.name] = WatchTriggerSpec.model_validate(change.record.data)

    def _event(self, event: Event) -> None:
        for spec in list(self.watches.values()):
            if not _matches(spec.event, event.type):
                continue
            if event.type == "instance.crashed" and event.data.get("function") == spec.function:
                continue
            if self.claims is not None:
                delay = self.claims.claim_delay() if event.type in SHARED_EVENTS else 0.0
                if delay:
                    # Drained: a serving node delivers it; this one only if none claimed it.
                    asyncio.get_running_loop().call_later(delay, self._late, spec, event)
                    continue
                if not self._claim(spec.name, event):
                    continue
            self.executor.spawn(self._deliver(spec, event))

    def _late(self, spec: WatchTriggerSpec, event: Event) -> None:
        if self.watches.get(spec.name) is not spec or self._unsubscribe is None:
            return  # changed, deleted or stopped meanwhile
        if self._claim(spec.name, event):
            self.executor.spawn(self._deliver(spec, event))

    def _claim(self, watch: str, event: Event) -> bool:
        assert self.claims is not None
        try:
            return self.claims.claim_delivery(watch, event.id)
        except Exception as exc:  # PostgreSQL away: not delivered (at most once)
            logger.warning("watch %s: %s %s not delivered: %s", watch, event.type, event.id, exc)
            return False

    async def _deliver(self, spec: WatchTriggerSpec, event: Event) -> None:
        headers = {
            "content-type": "application/json",
            "x-fissile-trigger": "watch",
            "x-fissile-trigger-name": spec.name,
            "x-fissile-event-type": event.type,
            "x-fissile-event-id": event.id,
        }
        body = json.dumps(event.to_json()).encode()
        result = await invoke(
            self.executor,
            spec.function,
            headers=headers,
            body=body,
            hop=tracing.hop(None),
            span=f"watch {spec.name}:",
        )
        if not (isinstance(result, InstanceResponse) and result.status < 400):
            self.executor.logs.platform(
                spec.function,
                f"watch {spec.name}: delivery of {event.type} {event.id} failed:"
                f" status {result.status}",
                "ERROR",
            )


def _matches(pattern: str, event_type: str) -> bool:
    return pattern in ("*", event_type) or fnmatch.fnmatchcase(event_type, pattern)
