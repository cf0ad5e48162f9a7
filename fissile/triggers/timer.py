"""Timer triggers at run time: one task per trigger sleeping until its next slot.

A slot is written to the trigger state table *before* the function is called, so a restart
never fires a slot twice (a crash between the write and the call loses that one run: timers
are at most once). After a restart the schedule resumes from the first slot after both now and
the last slot fired: runs missed while the platform was down are skipped, not caught up.
Each run is its own task, so a slow function does not delay the next slot.

In a cluster the state is ``SharedClaims`` (``claims.py``): recording a slot claims it,
and only the node whose claim succeeded fires it. A drained node claims a slot only when no
serving node did, a few seconds after it (``claims.py``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from fissile.executor import Executor
from fissile.executor.connection import InstanceResponse
from fissile.models import TimeTriggerSpec, TimeTriggerStatus
from fissile.observability import tracing
from fissile.observability.tally import Tally
from fissile.router.invoke import invoke
from fissile.store import Change, Store
from fissile.store.space import StorageFull, writing
from fissile.triggers.schedule import Schedule

if TYPE_CHECKING:
    from fissile.triggers.claims import SharedClaims

logger = logging.getLogger("fissile.timer")

# Sleep in steps of at most this, so a wall-clock step (NTP, suspend) is noticed.
MAX_SLEEP = 30.0


def next_slot(schedule: Schedule, now: datetime, last_fired: datetime | None) -> datetime:
    """The next slot to fire: after now (missed slots are skipped) and after the last slot
    fired (never twice, even when the clock went back)."""
    return schedule.next_after(now if last_fired is None else max(now, last_fired))


class TimerState:
    """The last slot each timer fired, in a small SQLite file of the data dir."""

    def __init__(self, path: Path) -> None:
        self.data_dir = path.parent
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS timer_state (name TEXT PRIMARY KEY, last_fired REAL)"
        )
        self._lock = threading.Lock()

    def last_fired(self, name: str) -> datetime | None:
        with self._lock:
            row = self._db.execute(
                "SELECT last_fired FROM timer_state WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else datetime.fromtimestamp(row[0], UTC)

    def record(self, name: str, slot: datetime) -> bool:
        """True: the slot is this platform's to fire (always, on one node). Raises StorageFull
        when the disk is full."""
        with self._lock, writing(self.data_dir):
            self._db.execute(
                "INSERT INTO timer_state (name, last_fired) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET last_fired = excluded.last_fired",
                (name, slot.timestamp()),
            )
        return True

    def forget(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM timer_state WHERE name = ?", (name,))

    def claim_delay(self) -> float:
        return 0.0  # a single node is never drained

    def close(self) -> None:
        self._db.close()


class Timer:
    def __init__(
        self,
        spec: TimeTriggerSpec,
        state: TimerState | SharedClaims,
        executor: Executor,
        fires: Tally | None = None,
    ) -> None:
        self.spec = spec
        # (trigger, outcome) -> slots; the service's, so counts outlive an update
        self.fires = fires if fires is not None else Tally()
        self.schedule = Schedule(spec.cron, spec.timezone)
        self.state = state
        self.executor = executor
        self.next_fire: datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self._runs: set[asyncio.Task[None]] = set()
        self._late: set[asyncio.Task[None]] = set()  # slots a drained node may claim later
        self._skipped = 0  # slots skipped since the last one recorded

    def status(self) -> TimeTriggerStatus:
        return TimeTriggerStatus(
            last_fired=self.state.last_fired(self.spec.name), next_fire=self.next_fire
        )

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        """Stop scheduling; runs already started finish on their own."""
        if self._task is not None:
            self._task.cancel()
        for late in self._late:
            late.cancel()

    async def _run(self) -> None:
        name = self.spec.name
        while True:
            slot = next_slot(self.schedule, datetime.now(UTC), self.state.last_fired(name))
            self.next_fire = slot
            while (delay := slot.timestamp() - time.time()) > 0:
                await asyncio.sleep(min(delay, MAX_SLEEP))
            delay = self.state.claim_delay()
            if delay:
                # Drained: the serving nodes claim the slot; this one only if none did.
                late = asyncio.get_running_loop().create_task(self._claim_late(slot, delay))
                self._late.add(late)
                late.add_done_callback(self._late.discard)
                continue
            self._claim(slot)

    async def _claim_late(self, slot: datetime, delay: float) -> None:
        await asyncio.sleep(delay)
        self._claim(slot)

    def _claim(self, slot: datetime) -> None:
        """Record ``slot`` and, if it is this node's to fire, fire it."""
        name = self.spec.name
        try:
            if not self.state.record(name, slot):
                return  # another node of the cluster claimed it first and fires it
        except StorageFull as exc:
            # Unrecorded, a run could fire twice after a restart: skip the slot (timers
            # are at most once) and keep the schedule for when the disk has space.
            if not self._skipped:
                logger.warning("timer %s: skipping slots until it can record them: %s", name, exc)
            self._skipped += 1
            self.fires.add(name, "skipped")
            return
        if self._skipped:
            logger.warning("timer %s: %d slots skipped (disk full)", name, self._skipped)
            self._skipped = 0
        run = asyncio.get_running_loop().create_task(self._fire(slot))
        self._runs.add(run)
        run.add_done_callback(self._runs.discard)

    async def _fire(self, slot: datetime) -> None:
        spec = self.spec
        headers = {
            "x-fissile-trigger": "timer",
            "x-fissile-timer-name": spec.name,
            "x-fissile-timer-slot": slot.isoformat(),
        }
        try:
            # Each fire starts a trace of its own.
            result = await invoke(
                self.executor,
                spec.function,
                method=spec.method,
                headers=headers,
                hop=tracing.hop(None),
                span=f"timer {spec.name}:",
            )
        except Exception as exc:  # this run is lost; the schedule goes on
            logger.exception("timer %s: run of %s failed", spec.name, spec.function)
            reason = f"{type(exc).__name__}: {exc}"
        else:
            if isinstance(result, InstanceResponse) and result.status < 400:
                self.fires.add(spec.name, "succeeded")
                return
            reason = f"status {result.status}"
        self.fires.add(spec.name, "failed")
        self.executor.logs.platform(
            spec.function, f"timer {spec.name}: run at {slot.isoformat()} failed: {reason}", "ERROR"
        )


class TimerService:
    """Follows the store: timers start, restart and stop as triggers change."""

    def __init__(self, store: Store, state: TimerState | SharedClaims, executor: Executor) -> None:
        self.store = store
        self.state = state
        self.executor = executor
        self.timers: dict[str, Timer] = {}
        # (trigger, outcome) -> slots, since the platform started or the trigger was made
        self.fires = Tally()
        self._stopping = False

    def start(self) -> None:
        for record in self.store.list("timetriggers"):
            self._add(TimeTriggerSpec.model_validate(record.data))
        self.store.subscribe(self._changed)

    def status(self, name: str) -> TimeTriggerStatus:
        timer = self.timers.get(name)
        if timer is None:
            return TimeTriggerStatus(last_fired=self.state.last_fired(name))
        return timer.status()

    def _add(self, spec: TimeTriggerSpec) -> None:
        timer = Timer(spec, self.state, self.executor, self.fires)
        self.timers[spec.name] = timer
        timer.start()

    def _changed(self, change: Change) -> None:
        if change.record.kind != "timetriggers" or self._stopping:
            return
        old = self.timers.pop(change.record.name, None)
        if old is not None:
            old.stop()
        if change.action == "deleted":
            self.state.forget(change.record.name)
            self.fires.forget(change.record.name)
        else:
            self._add(TimeTriggerSpec.model_validate(change.record.data))

    def stop(self) -> None:
        self._stopping = True
        for timer in self.timers.values():
            timer.stop()
        self.timers.clear()
