"""The registry of a cluster's nodes: one row per node in PostgreSQL, refreshed by heartbeats.

Each node writes its row every ``HEARTBEAT`` seconds (address, version, instances per
function, in-flight requests, free memory) and reads everyone's in the same round trip, so
its view of the cluster is at most one heartbeat old. Ages are measured by the database's
clock, never by the nodes' (which may disagree): a node whose last heartbeat is older than
``DEAD_AFTER`` is dead to everyone. Draining is a state in the row, set by whichever node's
API received ``fissile node drain``; the drained node sees it at its next heartbeat. The drain
is also kept apart (``drained``) from the state a node writes itself (``stopped`` when it stops,
back to work when it starts): a drained node stays drained through its restarts until
``fissile node resume``.

The heartbeat runs on its own connection (not the store's pool, whose one connection serves
the control plane's writes), so a slow write never delays a heartbeat and the other way round.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

import fissile
from fissile.executor import Executor

log = logging.getLogger("fissile.cluster")

HEARTBEAT = 1.0  # seconds between two heartbeats of a node
DEAD_AFTER = 4.0  # no heartbeat for this long (4 missed): the node is dead

_TABLE = """
CREATE TABLE IF NOT EXISTS fissile_nodes (
    name TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    instances INTEGER NOT NULL DEFAULT 0,
    inflight INTEGER NOT NULL DEFAULT 0,
    memory_free BIGINT NOT NULL DEFAULT 0,
    functions JSONB NOT NULL DEFAULT '{}',
    drained BOOLEAN NOT NULL DEFAULT false,
    idle JSONB NOT NULL DEFAULT '{}'
)
"""

# Columns added after the table's first release: a table made by an older fissile gains them
# at start. Each is looked up first: ALTER TABLE locks the table (every node's heartbeat) even
# when the column exists, and a node joining a running cluster should take no lock on it.
# The nodes drained before drains outlived restarts stay drained.
_DRAINED = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
            AND table_name = 'fissile_nodes' AND column_name = 'drained') THEN
        ALTER TABLE fissile_nodes ADD COLUMN IF NOT EXISTS drained BOOLEAN NOT NULL DEFAULT false;
        UPDATE fissile_nodes SET drained = true WHERE state = 'draining';
    END IF;
END $$
"""

_IDLE = """
DO $$ BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
        AND table_name = 'fissile_nodes' AND column_name = 'idle'
    ) THEN
        ALTER TABLE fissile_nodes ADD COLUMN IF NOT EXISTS idle JSONB NOT NULL DEFAULT '{}';
    END IF;
END $$
"""

# Inserting a node that exists (a restart) takes its row over: back at work, or still
# draining if it was drained (by ``fissile node drain``, before or while it was away).
_JOIN = """
INSERT INTO fissile_nodes (name, address, version, state, started_at, heartbeat_at)
VALUES (%(name)s, %(address)s, %(version)s, 'active', now(), now())
ON CONFLICT (name) DO UPDATE SET
    address = EXCLUDED.address, version = EXCLUDED.version, started_at = now(),
    heartbeat_at = now(),
    state = CASE WHEN fissile_nodes.drained THEN 'draining' ELSE 'active' END
"""

_BEAT = """
UPDATE fissile_nodes SET heartbeat_at = now(), instances = %(instances)s,
    inflight = %(inflight)s, memory_free = %(memory_free)s, functions = %(functions)s,
    idle = %(idle)s
WHERE name = %(name)s
"""

_LIST = """
SELECT name, address, version, state, started_at, heartbeat_at, instances, inflight,
    memory_free, functions, drained, idle, EXTRACT(EPOCH FROM now() - heartbeat_at) AS age
FROM fissile_nodes ORDER BY name
"""

# Draining (or resuming) a node: its drain, and its state unless it is stopped (a stopped node
# takes the drain up when it starts again).
_SET_STATE = """
UPDATE fissile_nodes SET drained = %(drained)s,
    state = CASE WHEN state = 'stopped' THEN 'stopped' ELSE %(state)s END
WHERE name = %(name)s
"""


class NodeNotFound(Exception):
    pass


class NodeAlive(Exception):
    """A node whose row cannot be forgotten: it is running (not stopped, heartbeat recent)."""


@dataclass
class NodeInfo:
    """One node as its last heartbeat left it."""

    name: str
    address: str  # host:port of its router, where peers forward requests
    version: str
    state: str  # active, draining or stopped (as written); ``status`` adds dead
    started_at: datetime
    heartbeat_at: datetime
    age: float  # seconds since its last heartbeat, by the database's clock
    instances: int = 0
    inflight: int = 0
    memory_free: int = 0
    functions: dict[str, int] = field(default_factory=dict)
    drained: bool = False  # drained by an operator: it stays so through restarts until resumed
    # Requests each function could take at once without a new instance (cluster/placement.py).
    idle: dict[str, int] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.state != "stopped" and self.age < DEAD_AFTER

    @property
    def status(self) -> str:
        return self.state if self.alive or self.state == "stopped" else "dead"

    @property
    def serving(self) -> bool:
        """Whether new work may go there."""
        return self.alive and self.state == "active"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "version": self.version,
            "state": self.status,
            "started_at": self.started_at.isoformat(),
            "last_heartbeat": self.heartbeat_at.isoformat(),
            "heartbeat_age": round(self.age, 3),
            "instances": self.instances,
            "inflight": self.inflight,
            "memory_free": self.memory_free,
            "functions": self.functions,
            "drained": self.drained,
        }


def _info(row: dict[str, Any]) -> NodeInfo:
    functions, idle = row["functions"], row.get("idle") or {}
    if isinstance(functions, str):
        functions = json.loads(functions)
    if isinstance(idle, str):
        idle = json.loads(idle)
    return NodeInfo(
        name=row["name"],
        address=row["address"],
        version=row["version"],
        state=row["state"],
        started_at=row["started_at"],
        heartbeat_at=row["heartbeat_at"],
        age=float(row["age"]),
        instances=row["instances"],
        inflight=row["inflight"],
        memory_free=row["memory_free"],
        functions=dict(functions),
        drained=bool(row.get("drained", False)),
        idle=dict(idle),
    )


def memory_available() -> int:
    """Bytes the kernel could give new processes now (MemAvailable), 0 if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class Nodes:
    """This node's membership: joins at start, beats, follows everyone's rows."""

    def __init__(self, url: str, name: str, address: str, executor: Executor | None) -> None:
        self.url = url
        self.name = name
        self.address = address
        self.executor = executor
        self.peers: list[NodeInfo] = []  # the other nodes, as of the last heartbeat
        self.viewed_at = 0.0  # when ``peers`` was read (time.monotonic())
        self.draining = False
        # Called with the new value whenever ``draining`` changes (the node's background
        # work follows it: MQ consumers stop fetching, ``platform.py``).
        self.drain_followers: list[Callable[[bool], None]] = []
        self.memory_free = 0  # this node's, as its last heartbeat measured it (0: unknown)
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        # Everything on the connection takes turns: a heartbeat computed before a claim and
        # written after it would lower the count the claim just raised, and two transactions
        # interleaved on one connection are refused by psycopg (a failed heartbeat then closed
        # the connection under ``fissile node forget``).
        self._lock = asyncio.Lock()
        self.refused = 0  # instance starts refused because the cluster was at max_scale
        self._seen: dict[str, int] = {}  # function -> peers' instances, by the last claims
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def _connect(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, row_factory=dict_row, connect_timeout=5
            )
        return self._conn

    async def start(self) -> None:
        conn = await self._connect()
        await conn.execute(_TABLE)
        await conn.execute(_DRAINED)
        await conn.execute(_IDLE)
        await conn.execute(
            _JOIN, {"name": self.name, "address": self.address, "version": fissile.__version__}
        )
        await self._beat()
        self._task = asyncio.get_running_loop().create_task(self._beating())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        async with self._lock:  # a call of the API may still be on the connection
            with contextlib.suppress(psycopg.Error, OSError):
                conn = await self._connect()
                # A stopped node is not dead: nobody should wait for it to come back. Its
                # drain, if any, stays (``drained``) for its next start.
                await conn.execute(
                    "UPDATE fissile_nodes SET state = 'stopped' WHERE name = %s",
                    (self.name,),
                )
            if self._conn is not None:
                await self._conn.close()

    async def _beating(self) -> None:
        delay = HEARTBEAT
        while True:
            await asyncio.sleep(delay)
            try:
                await self._beat()
                delay = HEARTBEAT
            except (psycopg.Error, OSError) as exc:
                # The database is away: peers will see this node as dead after DEAD_AFTER,
                # and it keeps serving what it has (docs/cluster.md).
                log.warning("cluster: heartbeat failed: %s", exc)
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        await self._conn.close()
                self._conn = None

    def report(self) -> dict[str, Any]:
        """What this node's heartbeat publishes about its work."""
        functions: dict[str, int] = {}
        idle: dict[str, int] = {}
        inflight = 0
        if self.executor is not None:
            for name, pool in self.executor.functions.items():
                # Starts still waiting for their claim are not this node's yet.
                starting = pool.starting - pool.claiming
                count = len(pool.instances) + starting
                if count:
                    functions[name] = count
                    # Free slots of the ready instances and of those starting, less the
                    # requests queued for them.
                    free = sum(max(0, pool.limit - i.inflight) for i in pool.instances)
                    free += starting * pool.limit - len(pool.waiters)
                    if free > 0:
                        idle[name] = free
                inflight += pool.inflight
        self.memory_free = memory_available()
        return {
            "name": self.name,
            "instances": sum(functions.values()),
            "inflight": inflight,
            "memory_free": self.memory_free,
            "functions": json.dumps(functions),
            "idle": json.dumps(idle),
        }

    async def _beat(self) -> None:
        async with self._lock:
            await self._beat_locked()

    async def _beat_locked(self) -> None:
        conn = await self._connect()
        report = self.report()
        async with conn.transaction():
            await conn.execute(_BEAT, report)
            cursor = await conn.execute(_LIST)
            rows = await cursor.fetchall()
        everyone = [_info(row) for row in rows]
        me = next((node for node in everyone if node.name == self.name), None)
        if me is None:  # deleted by hand: join again
            await conn.execute(
                _JOIN, {"name": self.name, "address": self.address, "version": fissile.__version__}
            )
        else:
            if me.state == "draining" and not self.draining:
                log.warning("cluster: node %s is draining: new requests go to peers", self.name)
            self._drained(me.state == "draining")
        self.peers = [node for node in everyone if node.name != self.name]
        self.viewed_at = time.monotonic()
        self._seen.clear()  # the rows just read are fresher

    def _drained(self, draining: bool) -> None:
        if draining == self.draining:
            return
        self.draining = draining
        for follower in self.drain_followers:
            follower(draining)

    def elsewhere(self, function: str) -> int:
        """Instances of ``function`` the live peers held at their last heartbeat or claim
        (a refused claim tells the count before the next heartbeat does)."""
        held = sum(node.functions.get(function, 0) for node in self.peers if node.alive)
        return max(held, self._seen.get(function, 0))

    async def claim(self, function: str, local: int, bound: int) -> bool:
        """Whether this node may hold ``local`` instances of ``function`` (one more than it
        had) with the cluster's total kept at ``bound`` or below; if so, its count is raised
        in its row before the instance starts.

        Exact among live nodes: each claim of a function holds a transaction-scoped advisory
        lock on it while it sums the others' counts and raises its own, so two nodes never
        both take the last slot. Counts only fall at heartbeats, so a stopped instance frees
        its slot up to HEARTBEAT later (a claim refused meanwhile is retried). A node that
        stops heartbeating stops counting after DEAD_AFTER, even if its instances still run:
        the bound can then be passed by the dead node's instances for as long as it is gone."""
        async with self._lock:
            conn = await self._connect()
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('fissile-scale:' || %s))", (function,)
                )
                cursor = await conn.execute(
                    "SELECT coalesce(sum((functions->>%s)::int), 0) AS held FROM fissile_nodes"
                    " WHERE name != %s AND state != 'stopped'"
                    " AND now() - heartbeat_at < make_interval(secs => %s)",
                    (function, self.name, DEAD_AFTER),
                )
                row = await cursor.fetchone()
                others = int(row["held"]) if row is not None else 0
                self._seen[function] = others
                if others + local > bound:
                    self.refused += 1
                    return False
                await conn.execute(
                    "UPDATE fissile_nodes SET functions = functions || jsonb_build_object(%s::text,"
                    " %s::int) WHERE name = %s",
                    (function, local, self.name),
                )
        return True

    async def list(self) -> list[NodeInfo]:
        async with self._lock:
            return await self._list_locked()

    async def _list_locked(self) -> builtins.list[NodeInfo]:  # ``list`` is the method
        conn = await self._connect()
        cursor = await conn.execute(_LIST)
        return [_info(row) for row in await cursor.fetchall()]

    async def set_state(self, name: str, state: str) -> NodeInfo:
        """Drain a node (``draining``) or put it back to work (``active``). A stopped node
        keeps the drain for its next start, a dead one for when it is back."""
        async with self._lock:
            conn = await self._connect()
            cursor = await conn.execute(
                _SET_STATE, {"drained": state == "draining", "state": state, "name": name}
            )
            if cursor.rowcount == 0:
                raise NodeNotFound(name)
            if name == self.name:
                self._drained(state == "draining")
            return next(node for node in await self._list_locked() if node.name == name)

    async def forget(self, name: str) -> None:
        """Delete the row of a node retired for good: one that stopped, or is dead (no
        heartbeat for DEAD_AFTER). A live node is refused (it would join again at its next
        heartbeat anyway); so is this node. The builds it held are no longer offered."""
        async with self._lock:
            await self._forget_locked(name)

    async def _forget_locked(self, name: str) -> None:
        conn = await self._connect()
        async with conn.transaction():
            cursor = await conn.execute(
                "DELETE FROM fissile_nodes WHERE name = %s AND name != %s AND (state = 'stopped'"
                " OR now() - heartbeat_at >= make_interval(secs => %s)) RETURNING name",
                (name, self.name, DEAD_AFTER),
            )
            if await cursor.fetchone() is None:
                cursor = await conn.execute("SELECT 1 FROM fissile_nodes WHERE name = %s", (name,))
                if await cursor.fetchone() is None:
                    raise NodeNotFound(name)
                raise NodeAlive(name)
            cursor = await conn.execute("SELECT to_regclass('fissile_artifacts') IS NOT NULL AS t")
            row = await cursor.fetchone()
            if row is not None and row["t"]:
                await conn.execute("DELETE FROM fissile_artifacts WHERE node = %s", (name,))
