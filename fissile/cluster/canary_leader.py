"""The canary controller of a cluster: one node leads it, and it decides on every node's counts.

**Leader.** The node holding a PostgreSQL session advisory lock (``pg_try_advisory_lock`` on a
key derived from the schema, so clusters sharing a database stay apart) runs the controller
(``fissile/controlplane/canaries.py``); the others try to take the lock every ``TICK``. The lock
belongs to this module's connection: a leader that dies, or whose connection dies, loses it
with the session, and another node takes it at its next try. A leader that stops answering is
cut off by the server (``idle_session_timeout``), and a leader whose query fails or hangs gives
the lead up at once, so two controllers overlap at most for that moment: the canary's writes
are compare-and-set, so even then one step is taken once.

**Counts.** Each node writes, every ``TICK`` on the same connection, one row per function a
pending canary moves to (``fissile_canary_counts``): the requests its router answered and how
many with a 5xx, since ``since`` (the database's time when the node began counting that
function). The leader reads the rows written in the last ``FRESH`` seconds (rows of dead nodes
age out) and the controller's ``interval`` sums each node's growth since the last step. A
restarted node begins again from 0 under a new ``since``, so it never subtracts. A request
forwarded between routers is counted by the node that served it, once.

Nothing of this runs on a single node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

import psycopg

from fissile.controlplane.canaries import Canaries, Count, Tally
from fissile.observability.metrics import Metrics, server_errors
from fissile.store.pgpool import create_tables, open_pool

log = logging.getLogger("fissile.cluster")

TICK = 1.0  # seconds between two writes of a node's counts, and two tries at the lock
FRESH = 4.0  # rows written longer ago than this are a dead node's: not summed
TIMEOUT = 3.0  # a round trip that takes longer gives the lead up (the connection is dropped)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS fissile_canary_counts (node TEXT NOT NULL,"
    " function TEXT NOT NULL, since TIMESTAMPTZ NOT NULL, requests BIGINT NOT NULL,"
    " errors BIGINT NOT NULL, at TIMESTAMPTZ NOT NULL, PRIMARY KEY (node, function))",
)
_CREATE_LOCK = 0x66697377

# 64 bits of the schema's name: one leader per cluster, whatever else shares the database.
_TRY_LOCK = (
    "SELECT pg_try_advisory_lock(('x' || left(md5('fissile-canary-leader:'"
    " || current_schema()), 16))::bit(64)::bigint)"
)

# A function counted from now on (``fresh``) starts over under a new ``since``.
_WRITE = """
INSERT INTO fissile_canary_counts AS c (node, function, since, requests, errors, at)
SELECT %(node)s, f, now(), r, e, now()
FROM unnest(%(functions)s::text[], %(requests)s::bigint[], %(errors)s::bigint[]) AS u(f, r, e)
ON CONFLICT (node, function) DO UPDATE SET
    requests = EXCLUDED.requests, errors = EXCLUDED.errors, at = now(),
    since = CASE WHEN EXCLUDED.function = ANY(%(fresh)s::text[]) THEN now() ELSE c.since END
"""

_FORGET = "DELETE FROM fissile_canary_counts WHERE node = %s AND NOT (function = ANY(%s))"

_READ = """
SELECT node, function, since, requests, errors FROM fissile_canary_counts
WHERE at > now() - make_interval(secs => %s)
"""


class CanaryLeader:
    """This node's part in the cluster's canary controller: it writes its counts, tries for the
    lead, and runs ``canaries`` while it holds it (their ``Counts`` then)."""

    def __init__(self, url: str, node: str, metrics: Metrics) -> None:
        self.url = url
        self.node = node
        self.metrics = metrics
        self.canaries: Canaries | None = None
        self.leading = False
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # function -> this router's counters when it began counting it for the cluster
        self._counting: dict[str, Count] = {}
        self._fresh: set[str] = set()  # counted from this write on: a new ``since``
        self._written: set[str] = set()  # functions whose rows this node has
        # The rows of every live node, by function then node, read at ``_at`` (the leader's).
        self._rows: dict[str, dict[str, Count]] = {}
        self._at: datetime | None = None

    # -- Counts (what the controller reads while this node leads) --------------------------

    @property
    def enabled(self) -> bool:
        return self.metrics.enabled

    def tally(self, function: str) -> Tally:
        return Tally(dict(self._rows.get(function, {})), self._at)

    # -- life --------------------------------------------------------------------------------

    async def start(self, canaries: Canaries) -> None:
        self.canaries = canaries
        await asyncio.to_thread(self._create_table)
        self._task = asyncio.get_running_loop().create_task(self._running(), name="canary leader")

    def _create_table(self) -> None:
        pool = open_pool(self.url, "fissile-canary-counts")
        try:
            create_tables(pool, _CREATE_LOCK, _SCHEMA)
        finally:
            pool.close()

    async def stop(self) -> None:
        """Stop leading (the lock goes with the connection), after a last write of the
        counts, so the next leader sums this node's last requests too."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            # The loop also ends by itself at its next turn (``_stopping``).
            await asyncio.wait({self._task}, timeout=TIMEOUT + TICK)
        await self._give_up()
        if self._conn is not None and not self._conn.closed:
            with contextlib.suppress(psycopg.Error, OSError, TimeoutError):
                async with asyncio.timeout(TIMEOUT):
                    await self._write(self._conn)
        await self._drop()

    async def _running(self) -> None:
        while not self._stopping:
            try:
                async with asyncio.timeout(TIMEOUT):
                    await self._tick()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                if self.leading:
                    log.warning("cluster: canary controller: lead lost (%s)", exc)
                await self._give_up()
                await self._drop()
            except Exception:
                # Anything else (the store failing under ``lead``): give the lead up rather
                # than hold it without running, and try again at the next tick.
                log.exception("cluster: canary controller failed")
                await self._give_up()
                await self._drop()
            await asyncio.sleep(TICK)

    async def _tick(self) -> None:
        conn = await self._connect()
        elected = False
        if not self.leading:
            cursor = await conn.execute(_TRY_LOCK)
            row = await cursor.fetchone()
            elected = bool(row and row[0])
        async with conn.transaction():
            await self._write(conn)
            if self.leading or elected:
                await self._read(conn)
        if elected:
            self.leading = True
            log.info("cluster: canary controller: node %s leads", self.node)
            if self.canaries is not None:
                self.canaries.lead()

    async def _give_up(self) -> None:
        if self.leading:
            self.leading = False
            if self.canaries is not None:
                await self.canaries.follow()
        self._rows.clear()
        self._at = None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=5
            )
            # The server ends the session after 5 s without a query: a leader that is stuck or
            # cut off loses its lock (a live one runs a query every TICK).
            with contextlib.suppress(psycopg.Error):
                await conn.execute("SET idle_session_timeout = '5s'")
            # Counts are rewritten every second: one a crash of the server loses is worth no
            # wait for the disk.
            await conn.execute("SET synchronous_commit = off")
            self._conn = conn
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    # -- counts ------------------------------------------------------------------------------

    def _counts(self) -> dict[str, Count]:
        """This router's counts of every function a pending canary moves to, since it began
        counting it for the cluster."""
        wanted = self.canaries.pending() if self.canaries is not None else set()
        for function in set(self._counting) - wanted:
            del self._counting[function]
        counts: dict[str, Count] = {}
        for function in wanted:
            requests = self.metrics.function(function).requests
            now = Count(sum(requests.values()), server_errors(requests))
            base = self._counting.get(function)
            if base is None or now.requests < base.requests:
                # Counted from here (a function's series forgotten starts again too).
                base = self._counting[function] = now if base is None else Count(0, 0)
                self._fresh.add(function)
            counts[function] = Count(now.requests - base.requests, now.errors - base.errors)
        return counts

    async def _write(self, conn: psycopg.AsyncConnection[Any]) -> None:
        counts = self._counts()
        if self._written - set(counts):
            await conn.execute(_FORGET, (self.node, list(counts)))
        if counts:
            functions = list(counts)
            await conn.execute(
                _WRITE,
                {
                    "node": self.node,
                    "functions": functions,
                    "requests": [counts[f].requests for f in functions],
                    "errors": [counts[f].errors for f in functions],
                    "fresh": [f for f in functions if f in self._fresh],
                },
            )
        self._fresh.clear()
        self._written = set(counts)

    async def _read(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cursor = await conn.execute("SELECT now()")
        row = await cursor.fetchone()
        assert row is not None
        at: datetime = row[0]
        cursor = await conn.execute(_READ, (FRESH,))
        rows: dict[str, dict[str, Count]] = {}
        for node, function, since, requests, errors in await cursor.fetchall():
            rows.setdefault(function, {})[node] = Count(int(requests), int(errors), since)
        self._rows, self._at = rows, at
