"""Asynchronous invocations shared by the nodes of a cluster: one table in PostgreSQL, beside
the resources of the store (``docs/cluster.md``).

The same protocol as ``store.py`` (the SQLite record of one node), plus ownership: every
unfinished invocation is owned by one node for a lease (``owner``, ``lease_until``) which that
node renews while it holds the invocation, queued or running. Others claim what nobody owns and
what a dead node's lease left behind, with ``FOR UPDATE SKIP LOCKED``, so two nodes never
claim one invocation at once and claiming never waits for another claimer. A node that dies
mid-run leaves its invocation running with an expired lease: whoever claims it runs it again
(at-least-once, as after a restart of a single node).

Bodies, requests and responses, are ``bytea`` columns of the row: any node may run an
invocation or serve its result, and none has the accepting node's files. Requests are bounded
by the router's ``--max-body``, responses by ``--max-response-body``; PostgreSQL keeps large
values out of line (TOAST), so the rows scanned by claims stay small.

Lease times are the database's clock, so nodes' clocks need not agree. Calls are synchronous,
on the event loop, like the store's writes: one round trip each (``docs/architecture.md``).

Only accepting waits for the database's disk (``synchronous_commit``): a 202 promises the
invocation survives a crash of PostgreSQL too. Every later write (claims, leases, starts,
outcomes) commits without that wait, as SQLite's ``synchronous=NORMAL`` does on one node: a
crash of the PostgreSQL server may lose its last fraction of a second of them, which runs an
invocation again, never loses one (at-least-once holds). Measured: 1.2 ms a write with the
wait, 0.03 ms without (``docs/cluster.md``).
"""

from __future__ import annotations

import builtins
import json
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import PoolTimeout

from fissile.invocations.errors import InvocationError
from fissile.invocations.records import FINAL, Invocation, Response, Status
from fissile.store.pgpool import create_tables, open_pool
from fissile.store.space import StorageFull

_SCHEMA = """
CREATE TABLE IF NOT EXISTS invocations (
    id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    status TEXT NOT NULL,
    method TEXT NOT NULL,
    target TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BYTEA,
    max_attempts INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    error TEXT,
    response_status INTEGER,
    response_headers TEXT,
    response_body BYTEA,
    callback_url TEXT,
    callback_state TEXT,
    callback_attempts INTEGER NOT NULL DEFAULT 0,
    callback_error TEXT,
    owner TEXT,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS invocations_status ON invocations (status, created_at);
CREATE INDEX IF NOT EXISTS invocations_finished ON invocations (finished_at);
CREATE INDEX IF NOT EXISTS invocations_function ON invocations (function, status);
"""

_COLUMNS = (
    "id, function, status, method, target, headers, max_attempts, attempts, created_at,"
    " started_at, finished_at, next_attempt_at, error, response_status, response_headers,"
    " response_body, callback_url, callback_state, callback_attempts, callback_error, owner"
)

_NOW = "extract(epoch from clock_timestamp())"
_OPEN = "status IN ('queued', 'running')"
# A cancel made through another node wins over the outcome of the attempt it could not stop.
_NOT_CANCELLED = "status <> 'cancelled'"
# Due now and held by nobody: never held, given back, or left by a node whose lease ran out.
_FREE = f"{_OPEN} AND next_attempt_at <= {_NOW} AND (owner IS NULL OR lease_until < {_NOW})"

#: Serialises creating the table by nodes starting together (any constant will do).
_CREATE_LOCK = 0x66697374


class InvocationsUnavailable(StorageFull):
    """A write failed because PostgreSQL is away: the service holds it back and retries, as it
    does on a full disk."""

    def __init__(self, reason: str) -> None:
        StorageFull.__init__(self, "")
        self.args = (f"the invocation store is unavailable: {reason}",)


class PostgresInvocationStore:
    #: Other nodes share the records: the service claims, renews and polls (``service.py``).
    shared = True

    def __init__(self, url: str, node: str, lease: float = 10.0) -> None:
        self.node = node
        self.lease = lease
        self.data_dir = Path(".")  # for the service's messages only; nothing is written there
        self._lock = threading.Lock()
        self._pool = open_pool(url, "fissile-invocations", _configure)
        create_tables(self._pool, _CREATE_LOCK, _SCHEMA.split(";"))

    def close(self) -> None:
        self._pool.close()

    # -- ownership ----------------------------------------------------------------------

    def free(self) -> dict[str, int]:
        """How many invocations nobody holds, by function."""
        rows = self._query(f"SELECT function, COUNT(*) FROM invocations WHERE {_FREE} GROUP BY 1")
        return {function: count for function, count in rows}

    def claim(self, limit: int, function: str | None = None) -> builtins.list[Invocation]:
        """Take up to ``limit`` invocations (of ``function``, or any) that nobody holds,
        oldest first, for a lease."""
        if limit <= 0:
            return []
        which = "" if function is None else " AND function = %s"
        args = () if function is None else (function,)
        rows = self._query(
            f"UPDATE invocations SET owner = %s, lease_until = {_NOW} + %s"
            f" WHERE id IN (SELECT id FROM invocations WHERE {_FREE}{which}"
            " ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED)"
            f" RETURNING {_COLUMNS}",
            (self.node, self.lease, *args, limit),
        )
        return sorted((self._invocation(row) for row in rows), key=lambda i: i.created_at)

    def renew(self) -> None:
        """Extend the lease of everything this node holds."""
        self._write(
            f"UPDATE invocations SET lease_until = {_NOW} + %s WHERE owner = %s AND {_OPEN}",
            (self.lease, self.node),
        )

    def release(self, ids: Iterable[str] | None = None) -> None:
        """Give up this node's invocations (all, or ``ids``): others claim them at once."""
        if ids is None:
            self._write(
                f"UPDATE invocations SET owner = NULL WHERE owner = %s AND {_OPEN}", (self.node,)
            )
        else:
            self._write(
                "UPDATE invocations SET owner = NULL WHERE owner = %s AND id = ANY(%s)",
                (self.node, list(ids)),
            )

    def cancelled(self, ids: Sequence[str]) -> builtins.list[str]:
        """Which of ``ids`` (attempts running here) were cancelled through another node."""
        rows = self._query(
            "SELECT id FROM invocations WHERE id = ANY(%s) AND status = 'cancelled'", (list(ids),)
        )
        return [row[0] for row in rows]

    def states(self, ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """(status, attempts) of each of ``ids`` that exists: what watchers poll for."""
        rows = self._query(
            "SELECT id, status, attempts FROM invocations WHERE id = ANY(%s)", (list(ids),)
        )
        return {row[0]: (row[1], row[2]) for row in rows}

    # -- writes -------------------------------------------------------------------------

    def add(self, invocation: Invocation, body: bytes, hold: bool = True) -> None:
        """Record a new invocation, held by this node (it runs it unless it dies first) or,
        without ``hold``, free for any node to claim."""
        try:
            self._durably(
                "INSERT INTO invocations (id, function, status, method, target, headers, body,"
                " max_attempts, created_at, next_attempt_at, callback_url, callback_state,"
                f" owner, lease_until) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                f" %s, {_NOW} + %s)",
                (
                    invocation.id,
                    invocation.function,
                    str(invocation.status),
                    invocation.method,
                    invocation.target,
                    json.dumps(invocation.headers),
                    body,
                    invocation.max_attempts,
                    invocation.created_at,
                    invocation.next_attempt_at,
                    invocation.callback_url,
                    invocation.callback_state,
                    self.node if hold else None,
                    self.lease if hold else 0,
                ),
            )
        except InvocationsUnavailable as exc:
            raise InvocationError(503, "store_unavailable", str(exc)) from None
        invocation.node = self.node if hold else None

    def started(self, invocation: Invocation) -> None:
        self._write(
            "UPDATE invocations SET status = %s, attempts = %s, started_at = %s, owner = %s"
            f" WHERE id = %s AND {_NOT_CANCELLED}",
            (
                str(invocation.status),
                invocation.attempts,
                invocation.started_at,
                self.node,
                invocation.id,
            ),
        )
        invocation.node = self.node

    def requeued(self, invocation: Invocation) -> None:
        self._write(
            "UPDATE invocations SET status = %s, attempts = %s, next_attempt_at = %s, error = %s"
            f" WHERE id = %s AND {_NOT_CANCELLED}",
            (
                str(invocation.status),
                invocation.attempts,
                invocation.next_attempt_at,
                invocation.error,
                invocation.id,
            ),
        )

    def finished(self, invocation: Invocation) -> None:
        response = invocation.response
        guard = "" if invocation.status is Status.cancelled else f" AND {_NOT_CANCELLED}"
        self._write(
            "UPDATE invocations SET status = %s, attempts = %s, started_at = %s,"
            " finished_at = %s, error = %s, response_status = %s, response_headers = %s,"
            " response_body = %s, callback_state = %s, body = NULL WHERE id = %s" + guard,
            (
                str(invocation.status),
                invocation.attempts,
                invocation.started_at,
                invocation.finished_at,
                invocation.error,
                None if response is None else response.status,
                None if response is None else json.dumps(response.headers),
                None if response is None else response.body,
                invocation.callback_state,
                invocation.id,
            ),
        )

    def callback_progress(self, invocation: Invocation) -> None:
        self._write(
            "UPDATE invocations SET callback_state = %s, callback_attempts = %s,"
            " callback_error = %s WHERE id = %s",
            (
                invocation.callback_state,
                invocation.callback_attempts,
                invocation.callback_error,
                invocation.id,
            ),
        )

    def expire(self, finished_before: float) -> int:
        rows = self._query(
            "DELETE FROM invocations WHERE finished_at < %s"
            " AND (callback_state IS NULL OR callback_state != 'pending') RETURNING id",
            (finished_before,),
        )
        return len(rows)

    # -- reads --------------------------------------------------------------------------

    def get(self, invocation_id: str) -> Invocation | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM invocations WHERE id = %s", (invocation_id,))
        return self._invocation(rows[0]) if rows else None

    def request_body(self, invocation_id: str) -> bytes:
        rows = self._query("SELECT body FROM invocations WHERE id = %s", (invocation_id,))
        return bytes(rows[0][0] or b"") if rows else b""

    def list(
        self,
        status: str | None = None,
        function: str | None = None,
        limit: int = 100,
    ) -> builtins.list[Invocation]:
        where, args = [], []
        if status is not None:
            where.append("status = %s")
            args.append(status)
        if function is not None:
            where.append("function = %s")
            args.append(function)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM invocations{clause} ORDER BY created_at DESC, id LIMIT %s",
            (*args, limit),
        )
        return [self._invocation(row) for row in rows]

    def unfinished(self) -> builtins.list[Invocation]:
        """This node's queued and running invocations (others' are theirs to resume)."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM invocations WHERE {_OPEN} AND owner = %s"
            " ORDER BY created_at, id",
            (self.node,),
        )
        return [self._invocation(row) for row in rows]

    def pending_callbacks(self) -> builtins.list[Invocation]:
        # Final ones whose node went away before delivering: the first node to start or
        # claim delivers them; a callback may so arrive more than once (as documented).
        rows = self._query(
            f"SELECT {_COLUMNS} FROM invocations WHERE callback_state = 'pending'"
            " AND status = ANY(%s) AND (owner IS NULL OR owner = %s OR lease_until < "
            f"{_NOW})",
            (sorted(str(s) for s in FINAL), self.node),
        )
        return [self._invocation(row) for row in rows]

    def census(self) -> dict[tuple[str, str], int]:
        rows = self._query(
            "SELECT function, status, COUNT(*) FROM invocations GROUP BY function, status"
        )
        return {(function, status): count for function, status, count in rows}

    def counts(self) -> dict[str, int]:
        rows = self._query("SELECT status, COUNT(*) FROM invocations GROUP BY status")
        return {status: count for status, count in rows}

    # -- helpers ------------------------------------------------------------------------

    def _query(self, query: str, args: tuple[Any, ...] = ()) -> builtins.list[TupleRow]:
        try:
            with self._lock, self._pool.connection() as conn:
                cursor = conn.execute(query.encode(), args)
                return cursor.fetchall() if cursor.description is not None else []
        except PoolTimeout as exc:
            raise InvocationsUnavailable(str(exc)) from exc
        except psycopg.OperationalError as exc:
            raise InvocationsUnavailable(str(exc).strip()) from exc

    def _write(self, query: str, args: tuple[Any, ...]) -> None:
        self._query(query, args)

    def _durably(self, query: str, args: tuple[Any, ...]) -> None:
        """``query`` committed once it is on the database's disk (one round trip: pipelined)."""
        try:
            with (
                self._lock,
                self._pool.connection() as conn,
                conn.pipeline(),
                conn.transaction(),
            ):
                conn.execute(b"SET LOCAL synchronous_commit = on")
                conn.execute(query.encode(), args)
        except PoolTimeout as exc:
            raise InvocationsUnavailable(str(exc)) from exc
        except psycopg.OperationalError as exc:
            raise InvocationsUnavailable(str(exc).strip()) from exc

    def _invocation(self, row: TupleRow) -> Invocation:
        (
            invocation_id,
            function,
            status,
            method,
            target,
            headers,
            max_attempts,
            attempts,
            created_at,
            started_at,
            finished_at,
            next_attempt_at,
            error,
            response_status,
            response_headers,
            response_body,
            callback_url,
            callback_state,
            callback_attempts,
            callback_error,
            owner,
        ) = row
        response = None
        if response_status is not None:
            response = Response(
                response_status,
                [(str(k), str(v)) for k, v in json.loads(response_headers)],
                bytes(response_body or b""),
            )
        return Invocation(
            id=invocation_id,
            function=function,
            status=Status(status),
            method=method,
            target=target,
            headers=[(str(k), str(v)) for k, v in json.loads(headers)],
            max_attempts=max_attempts,
            created_at=created_at,
            attempts=attempts,
            started_at=started_at,
            finished_at=finished_at,
            next_attempt_at=next_attempt_at,
            error=error,
            response=response,
            callback_url=callback_url,
            callback_state=callback_state,
            callback_attempts=callback_attempts,
            callback_error=callback_error,
            node=owner,
        )


def _configure(conn: psycopg.Connection[TupleRow]) -> None:
    conn.execute(b"SET synchronous_commit = off")
