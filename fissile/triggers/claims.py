"""What the nodes of a cluster do once between them, claimed in PostgreSQL first: timer slots
and watch deliveries (``docs/cluster.md``).

Every node runs every timer and wakes at every slot; the first to insert the slot's row fires
it, the others find the row there and skip it. Likewise every node sees every change of a
function and publishes its event under the same id (``watch.py``); a watch trigger is called by
the node that inserted the (trigger, event) row. No leader, nothing to elect or hand over: a dead
node simply stops inserting. A node that claims and dies before calling the function loses that
run, as a single node does (timers and watches are at most once).

A drained node (``fissile node drain``) takes no new work: it lets the serving nodes claim
first, and claims a slot or an event only ``LATE`` seconds after it was due, which finds the
row there unless no serving node claimed it (all drained, the others dead or not seeing the
change). The insert decides as ever, so a slot still fires once, whenever the drain comes: one
this node claimed before it saw the drain is its own to fire, and no one else's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import PoolTimeout

from fissile.store.pgpool import create_tables, open_pool
from fissile.store.space import StorageFull

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS timer_slots (timer TEXT NOT NULL,"
    " slot DOUBLE PRECISION NOT NULL, node TEXT NOT NULL, PRIMARY KEY (timer, slot))",
    "CREATE TABLE IF NOT EXISTS watch_deliveries (watch TEXT NOT NULL, event TEXT NOT NULL,"
    " node TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, PRIMARY KEY (watch, event))",
)
# Claims older than this are forgotten: only the last slot matters, and only for a while; an
# event is seen by every node within seconds.
KEEP = 24 * 3600.0
# Old watch deliveries are deleted by one claim in this many.
PRUNE_EVERY = 100
_CREATE_LOCK = 0x66697375
# How long after a slot or an event a drained node waits before claiming it itself: the
# serving nodes claim within milliseconds of it; this is for when none does.
LATE = 3.0


class SlotsUnavailable(StorageFull):
    """PostgreSQL is away: the slot cannot be claimed, so it is skipped (at most once)."""

    def __init__(self, reason: str) -> None:
        StorageFull.__init__(self, "")
        self.args = (f"the timer slots are unavailable: {reason}",)


class SharedClaims:
    def __init__(self, url: str, node: str) -> None:
        self.node = node
        self._lock = threading.Lock()
        self._pool = open_pool(url, "fissile-timer-slots")
        create_tables(self._pool, _CREATE_LOCK, _SCHEMA)
        self._claims = 0
        # Whether this node is drained: set by the platform (``Nodes.draining``).
        self.paused: Callable[[], bool] | None = None

    def claim_delay(self) -> float:
        """How long after a slot or an event this node claims it: at once, or ``LATE``
        seconds while it is drained, to let the serving nodes claim it first."""
        return LATE if self.paused is not None and self.paused() else 0.0

    def last_fired(self, name: str) -> datetime | None:
        rows = self._query("SELECT max(slot) FROM timer_slots WHERE timer = %s", (name,))
        value = rows[0][0] if rows else None
        return None if value is None else datetime.fromtimestamp(value, UTC)

    def record(self, name: str, slot: datetime) -> bool:
        """Claim ``slot`` for this node: True when it is this node's to fire."""
        stamp = slot.timestamp()
        rows = self._query(
            "INSERT INTO timer_slots (timer, slot, node) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING slot",
            (name, stamp, self.node),
        )
        if rows:
            self._query(
                "DELETE FROM timer_slots WHERE timer = %s AND slot < %s", (name, stamp - KEEP)
            )
        return bool(rows)

    def claim_delivery(self, watch: str, event_id: str) -> bool:
        """Claim the delivery of event ``event_id`` to watch trigger ``watch``: True when it
        is this node's to make."""
        now = time.time()
        rows = self._query(
            "INSERT INTO watch_deliveries (watch, event, node, at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING at",
            (watch, event_id, self.node, now),
        )
        self._claims += 1
        if self._claims % PRUNE_EVERY == 0:
            self._query("DELETE FROM watch_deliveries WHERE at < %s", (now - KEEP,))
        return bool(rows)

    def forget(self, name: str) -> None:
        self._query("DELETE FROM timer_slots WHERE timer = %s", (name,))

    def close(self) -> None:
        self._pool.close()

    def _query(self, query: str, args: tuple[Any, ...]) -> list[TupleRow]:
        try:
            with self._lock, self._pool.connection() as conn:
                cursor = conn.execute(query.encode(), args)
                return cursor.fetchall() if cursor.description is not None else []
        except PoolTimeout as exc:
            raise SlotsUnavailable(str(exc)) from exc
        except psycopg.OperationalError as exc:
            raise SlotsUnavailable(str(exc).strip()) from exc
