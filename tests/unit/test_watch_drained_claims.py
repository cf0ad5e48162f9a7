"""fissile/triggers/watch.py on a drained cluster node: a function's event, which every node
sees, is left to the serving nodes and claimed here only after ``claim_delay`` (delivered if no
one claimed it); an event only this node sees is claimed and delivered at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from fissile.events import Event, EventBus
from fissile.models import WatchTriggerSpec
from fissile.triggers import watch as watch_module
from fissile.triggers.watch import WatchService


class Claims:
    """Deliveries claimed by an insert only one node wins; ``taken`` are other nodes'."""

    def __init__(self) -> None:
        self.delay = 0.2
        self.taken: set[str] = set()
        self.claimed: dict[str, float] = {}

    def claim_delay(self) -> float:
        return self.delay

    def claim_delivery(self, watch: str, event_id: str) -> bool:
        self.claimed[event_id] = time.monotonic()
        if event_id in self.taken:
            return False
        self.taken.add(event_id)
        return True


class Executor:
    def spawn(self, coroutine: Any) -> None:
        asyncio.get_running_loop().create_task(coroutine)


async def test_a_drained_node_delivers_shared_events_only_when_no_one_claimed_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    delivered: list[str] = []

    async def invoke(executor: Any, function: str, **kwargs: Any) -> Any:
        delivered.append(kwargs["headers"]["x-fissile-event-id"])
        return type("Ok", (), {"status": 200})()

    monkeypatch.setattr(watch_module, "invoke", invoke)
    monkeypatch.setattr(watch_module, "InstanceResponse", object)
    claims = Claims()
    store = type("Store", (), {"list": lambda self, kind: [], "subscribe": lambda self, f: None})()
    events = EventBus()
    service = WatchService(store, events, Executor(), claims)  # type: ignore[arg-type]
    service.start()
    service.watches["w"] = WatchTriggerSpec(name="w", function="f", event="*")
    try:
        taken = Event("function.updated", {"function": "g"}, "e1")
        claims.taken.add("e1")  # a serving node claimed it at once
        free = Event("function.created", {"function": "h"}, "e2")  # nobody else saw it
        mine = Event("instance.crashed", {"function": "h"}, "e3")  # seen here only
        started = time.monotonic()
        for event in (taken, free, mine):
            service._event(event)
        assert claims.claimed.keys() == {"e3"}  # only this node's own event, at once
        deadline = time.monotonic() + 10
        while "e2" not in delivered:
            assert time.monotonic() < deadline, "an event nobody claimed was lost"
            await asyncio.sleep(0.02)
        assert claims.claimed["e1"] >= started + 0.2 and claims.claimed["e2"] >= started + 0.2
        assert sorted(delivered) == ["e2", "e3"]  # e1 was the serving node's
        # Resumed: claimed at once.
        claims.delay = 0.0
        service._event(Event("function.deleted", {"function": "h"}, "e4"))
        assert "e4" in claims.claimed
    finally:
        service.stop()
