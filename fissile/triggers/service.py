"""Every trigger beside the router, wired together for the platform: broker connections, MQ
consumers, timers, watch triggers, and the function events they publish."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from fissile.events import EventBus
from fissile.executor import Executor
from fissile.router.internal import PlatformSocketApp
from fissile.store import Store
from fissile.triggers.mq.consumer import ConsumerManager
from fissile.triggers.mq.hub import BrokerHub
from fissile.triggers.timer import TimerService, TimerState
from fissile.triggers.watch import WatchService, publish_function_changes

if TYPE_CHECKING:
    from fissile.triggers.claims import SharedClaims


class Triggers:
    def __init__(
        self,
        store: Store,
        executor: Executor,
        events: EventBus,
        data_dir: Path,
        claims: SharedClaims | None = None,
        shared_mq: tuple[str, str] | None = None,
    ) -> None:
        self.store = store
        self.events = events
        self.brokers = BrokerHub(data_dir / "mq.db", shared_mq)
        self.consumers = ConsumerManager(store, self.brokers, executor)
        # In a cluster, slots (and watch deliveries) are claimed in PostgreSQL (claims.py).
        self.claims = claims
        self._timer_state = claims or TimerState(data_dir / "triggers.db")
        self.timers = TimerService(store, self._timer_state, executor)
        self.watches = WatchService(store, events, executor, claims)
        #: The app of the platform socket (context.invoke / context.publish).
        self.socket_app = PlatformSocketApp(executor, self.brokers.deliver)

    @property
    def statuses(self) -> dict[str, Callable[[str], BaseModel]]:
        """Live status per trigger kind, for the control API's reads."""
        return {"mqtriggers": self.consumers.status, "timetriggers": self.timers.status}

    def start(self) -> None:
        """Follow the store (after the executor does, so functions exist when triggers fire)."""
        publish_function_changes(self.store, self.events, shared=self.watches.claims is not None)
        self.watches.start()
        self.consumers.start()
        self.timers.start()

    async def stop(self) -> None:
        """Timers and watches stop; consumers stop with their deliveries in flight unacked (the
        brokers deliver them again after a restart); broker connections close."""
        self.timers.stop()
        self.watches.stop()
        await self.consumers.stop()
        await self.brokers.close()
        self._timer_state.close()
        await self.events.drain(timeout=2.0)
