"""The shared store: PostgreSQL, for nodes that share one state (``docs/cluster.md``).

The protocol stays synchronous, as on SQLite, and so do its callers on the event loop. Reads
(``get``, ``find``, ``list``) come from an in-memory copy of the resources table, so they cost
what they cost on SQLite; each write is one autocommitted statement (one round trip) on the
loop, which blocks it for about a round trip (measured: ``docs/architecture.md``). Making the
protocol async would have touched every caller for no gain on the read path, which dominates.

The copy stays coherent by ``LISTEN/NOTIFY``: a trigger on the resources table notifies each
committed change, naming the writer's origin; a store applies its own writes at once and
re-reads the rows other processes changed, then tells its subscribers the differences. A
dropped listening connection reconnects and re-reads everything (a resync). With an event loop
given, all of that runs on the loop, so subscribers run where they do on SQLite.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import PoolTimeout

from fissile.store import schema
from fissile.store.base import (
    AlreadyExists,
    Change,
    NotFound,
    Record,
    StaleWrite,
    StoreError,
    StoreUnavailable,
    Subscriber,
)
from fissile.store.pgpool import open_pool
from fissile.store.postgres_revisions import SCHEMA as REVISIONS_SCHEMA
from fissile.store.postgres_revisions import PostgresRevisions

log = logging.getLogger("fissile.store")

_RESOURCES = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    generation BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, name)
)
"""

# Every committed change, whoever made it (a node, `store migrate`, psql), is announced on a
# channel per schema (named by its hash); the origin lets a store skip its own writes, already
# applied.
_NOTIFY = """
CREATE OR REPLACE FUNCTION fissile_notify() RETURNS trigger AS $$
DECLARE
    row_ RECORD;
BEGIN
    IF TG_OP = 'DELETE' THEN row_ := OLD; ELSE row_ := NEW; END IF;
    PERFORM pg_notify(
        'fissile_' || md5(TG_TABLE_SCHEMA),
        json_build_object(
            'o', current_setting('fissile.origin', true),
            'k', row_.kind,
            'n', row_.name
        )::text
    );
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""

_TRIGGER = """
CREATE TRIGGER fissile_resources_changed AFTER INSERT OR UPDATE OR DELETE ON resources
FOR EACH ROW EXECUTE FUNCTION fissile_notify()
"""

_VERSIONS = "CREATE TABLE IF NOT EXISTS fissile_schema (version INTEGER NOT NULL)"

#: ``MIGRATIONS[v]`` turns a version ``v - 1`` schema into version ``v`` (``schema.py``).
MIGRATIONS: dict[int, list[str]] = {1: [_RESOURCES, REVISIONS_SCHEMA, _NOTIFY, _TRIGGER]}

#: Serialises migrations of one database by nodes starting together (any constant will do).
_MIGRATION_LOCK = 0x66697373

_COLUMNS = "kind, name, data, generation, created_at, updated_at"


class PostgresStore(PostgresRevisions):
    def __init__(self, url: str, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.url = url
        self.origin = uuid.uuid4().hex
        self._loop = loop
        self._lock = threading.RLock()
        self._subscribers: list[Subscriber] = []
        self._records: dict[tuple[str, str], Record] = {}
        self._closed = threading.Event()
        self._stale = threading.Event()  # others' changes may be missing from the copy
        self._retry_at = 0.0
        try:
            self._schema = _migrate(url)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the store at {_safe(url)}: {exc}") from None
        # Hashed: a channel name must fit in 63 bytes, a schema name alone may take them all.
        digest = hashlib.md5(self._schema.encode(), usedforsecurity=False).hexdigest()
        self._channel = f"fissile_{digest}"
        # A write waits 5 s for the connection while the database is away, then fails with
        # StoreUnavailable.
        self._pool = open_pool(url, "fissile-store", self._configure)
        try:
            # Listen before the first load, so nothing committed in between goes unseen.
            self._listener = self._listen()
            self._resync(notify=False)
        except (psycopg.Error, StoreError) as exc:
            self._pool.close()
            raise StoreError(f"cannot open the store at {_safe(url)}: {exc}") from None
        self._thread = threading.Thread(target=self._follow, name="fissile-store-listen")
        self._thread.daemon = True
        self._thread.start()

    def _configure(self, conn: psycopg.Connection[TupleRow]) -> None:
        conn.execute("SELECT set_config('fissile.origin', %s, false)", (self.origin,))

    # -- reads (from the copy) ---------------------------------------------------------

    def find(self, kind: str, name: str) -> Record | None:
        return self._records.get((kind, name))

    def get(self, kind: str, name: str) -> Record:
        record = self._records.get((kind, name))
        if record is None:
            raise NotFound(kind, name)
        return record

    def list(self, kind: str) -> list[Record]:
        with self._lock:
            found = [r for (k, _), r in self._records.items() if k == kind]
        return sorted(found, key=lambda r: r.name)

    # -- writes (through the database, then the copy) ----------------------------------

    def create(self, kind: str, name: str, data: dict[str, Any]) -> Record:
        now = datetime.now(UTC)
        dumped = _dump(data)
        with self._lock:
            try:
                self._execute(
                    f"INSERT INTO resources ({_COLUMNS}) VALUES (%s, %s, %s, 1, %s, %s)",
                    (kind, name, dumped, now, now),
                )
            except psycopg.errors.UniqueViolation:
                raise AlreadyExists(kind, name) from None
            # The copy holds what a re-read would give (non-JSON values as strings).
            record = Record(kind, name, json.loads(dumped), 1, now, now)
            self._records[(kind, name)] = record
        self._notify(Change("created", record))
        return record

    def update(
        self, kind: str, name: str, data: dict[str, Any], *, generation: int | None = None
    ) -> Record:
        now = datetime.now(UTC)
        dumped = _dump(data)
        check = "" if generation is None else " AND generation = %s"
        args: tuple[Any, ...] = (kind, name) if generation is None else (kind, name, generation)
        with self._lock:
            # The old row comes back from the same statement, locked: no other writer slips
            # between reading the generation and bumping it.
            rows = self._execute(
                "UPDATE resources r SET data = %s, generation = old.generation + 1,"
                " updated_at = %s"
                f" FROM (SELECT {_COLUMNS} FROM resources WHERE kind = %s AND name = %s{check}"
                " FOR UPDATE) old"
                " WHERE r.kind = old.kind AND r.name = old.name"
                " RETURNING old.kind, old.name, old.data, old.generation, old.created_at,"
                " old.updated_at",
                (dumped, now, *args),
            )
            if not rows:
                current = self._read(kind, name)
                if current is None:
                    self._records.pop((kind, name), None)
                    raise NotFound(kind, name)
                assert generation is not None
                raise StaleWrite(kind, name, generation, current.generation)
            previous = _record(rows[0])
            record = Record(
                kind, name, json.loads(dumped), previous.generation + 1, previous.created_at, now
            )
            self._records[(kind, name)] = record
        self._notify(Change("updated", record, previous))
        return record

    def delete(self, kind: str, name: str) -> Record:
        with self._lock:
            rows = self._execute(
                f"DELETE FROM resources WHERE kind = %s AND name = %s RETURNING {_COLUMNS}",
                (kind, name),
            )
            if not rows:
                self._records.pop((kind, name), None)
                raise NotFound(kind, name)
            record = _record(rows[0])
            self._records.pop((kind, name), None)
        self._notify(Change("deleted", record, record))
        return record

    def _execute(self, query: str, args: tuple[Any, ...] = ()) -> builtins.list[TupleRow]:
        try:
            with self._pool.connection() as conn:
                cursor = conn.execute(query.encode(), args)
                return cursor.fetchall() if cursor.description is not None else []
        except psycopg.errors.IntegrityError:
            raise
        except (psycopg.OperationalError, PoolTimeout) as exc:
            # The pool replaces a broken connection: the next call may well succeed.
            raise StoreUnavailable(f"the store at {_safe(self.url)} is unavailable: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"store {_safe(self.url)}: {exc}") from exc

    def _read(self, kind: str, name: str) -> Record | None:
        rows = self._execute(
            f"SELECT {_COLUMNS} FROM resources WHERE kind = %s AND name = %s", (kind, name)
        )
        return _record(rows[0]) if rows else None

    # -- notifications -----------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def _notify(self, change: Change) -> None:
        for subscriber in list(self._subscribers):
            subscriber(change)

    def _listen(self) -> psycopg.Connection[TupleRow]:
        conn = psycopg.connect(self.url, autocommit=True)
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        return conn

    def _follow(self) -> None:
        """The listening thread: hands others' changes to the loop, reconnects when dropped."""
        delay = 0.1
        while not self._closed.is_set():
            try:
                keys: set[tuple[str, str]] = set()
                for note in self._listener.notifies(timeout=0.25, stop_after=0):
                    try:
                        payload = json.loads(note.payload)
                        if payload.get("o") != self.origin:
                            keys.add((str(payload["k"]), str(payload["n"])))
                    except (ValueError, KeyError, AttributeError):
                        # Not our trigger's: whatever it meant, a re-read covers it.
                        self._stale.set()
                if keys:
                    self._hand_over(self._reconcile, keys)
                if self._stale.is_set() and time.monotonic() >= self._retry_at:
                    # A change that could not be read when it was notified: read it all again.
                    self._stale.clear()
                    self._retry_at = time.monotonic() + 1.0
                    self._hand_over(self._resync_all)
                delay = 0.1
            except (psycopg.Error, OSError) as exc:
                if self._closed.is_set():
                    return
                log.warning("store: listening connection lost (%s); reconnecting", exc)
                self._listener.close()
                while not self._closed.wait(delay):
                    delay = min(delay * 2, 5.0)
                    try:
                        self._listener = self._listen()
                    except psycopg.Error:
                        continue
                    # Whatever was notified while no one listened: re-read it all.
                    self._hand_over(self._resync_all)
                    break

    def _hand_over(self, call: Any, *args: Any) -> None:
        if self._loop is None:
            self._safely(call, *args)
        else:
            # A loop closed meanwhile has no one left to tell.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._safely, call, *args)

    def _safely(self, call: Any, *args: Any) -> None:
        if self._closed.is_set():
            return
        try:
            call(*args)
        except StoreError as exc:
            # The database is away: the listening thread retries with a full re-read.
            log.warning("store: could not follow a change (%s); will re-read", exc)
            self._stale.set()

    def _resync_all(self) -> None:
        self._resync(notify=True)

    def _reconcile(self, keys: Iterable[tuple[str, str]]) -> None:
        wanted = sorted(keys)
        changes = []
        with self._lock:
            # One round trip for a burst of changes, however many rows it touched.
            rows = self._execute(
                f"SELECT {_COLUMNS} FROM resources"
                " JOIN unnest(%s::text[], %s::text[]) AS k (kind, name) USING (kind, name)",
                ([kind for kind, _ in wanted], [name for _, name in wanted]),
            )
            current = {(r.kind, r.name): r for r in map(_record, rows)}
            for key in wanted:
                changes.extend(self._apply(key, current.get(key)))
        for change in changes:
            self._notify(change)

    def _resync(self, *, notify: bool) -> None:
        rows = self._execute(f"SELECT {_COLUMNS} FROM resources")
        fresh = {(r.kind, r.name): r for r in map(_record, rows)}
        changes = []
        with self._lock:
            for key in sorted(set(fresh) | set(self._records)):
                changes.extend(self._apply(key, fresh.get(key)))
        if notify:
            for change in changes:
                self._notify(change)

    def _apply(self, key: tuple[str, str], current: Record | None) -> builtins.list[Change]:
        """Make the copy of ``key`` ``current``; the changes that makes, in order."""
        known = self._records.get(key)
        if current is None:
            if known is None:
                return []
            del self._records[key]
            return [Change("deleted", known, known)]
        self._records[key] = current
        if known is None:
            return [Change("created", current)]
        if (known.generation, known.created_at) == (current.generation, current.created_at):
            return []
        if known.created_at != current.created_at:
            # Deleted and made again while unseen: both halves.
            return [Change("deleted", known, known), Change("created", current)]
        return [Change("updated", current, known)]

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._listener.close()
        self._pool.close()


def _migrate(url: str) -> str:
    """Bring the database's schema to ``schema.VERSION``; the schema (namespace) used."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT current_schema()").fetchone()
        if row is None or row[0] is None:
            raise StoreError(
                f"the store at {_safe(url)} has no schema to use: create the schema named"
                " in its search_path first"
            )
        name = str(row[0])
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(_VERSIONS)
            found = conn.execute("SELECT max(version) FROM fissile_schema").fetchone()
            version = 0 if found is None or found[0] is None else int(found[0])
            schema.upgrade(
                version,
                MIGRATIONS,
                lambda statement: conn.execute(statement.encode()),
                lambda reached: (
                    conn.execute("DELETE FROM fissile_schema"),
                    conn.execute("INSERT INTO fissile_schema VALUES (%s)", (reached,)),
                ),
                where=_safe(url),
            )
        return name


def recorded_version(url: str) -> int:
    """The schema version the database at ``url`` records in its ``search_path`` schema (0:
    none yet), read without changing anything."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SELECT to_regclass('fissile_schema') IS NOT NULL").fetchone()
            if row is None or not row[0]:
                return 0
            found = conn.execute("SELECT max(version) FROM fissile_schema").fetchone()
    except psycopg.Error as exc:
        raise StoreError(f"cannot read the store at {_safe(url)}: {exc}") from None
    return 0 if found is None or found[0] is None else int(found[0])


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an invalid URL)"
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo("", **info)


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True, default=str)


def _record(row: TupleRow) -> Record:
    kind, name, data, generation, created, updated = row
    return Record(
        str(kind),
        str(name),
        json.loads(data),
        int(generation),
        created.astimezone(UTC),
        updated.astimezone(UTC),
    )
