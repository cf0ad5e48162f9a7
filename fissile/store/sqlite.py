"""The embedded store: one SQLite file in WAL mode, one table of JSON records.

Calls are synchronous. Control-plane writes take tens of microseconds on WAL with
``synchronous=NORMAL``, so running them on the event loop is cheaper than a thread hop; the
router never calls the store.

A full disk raises ``StorageFull`` from every write; a delete then spends the space reserve
kept beside the database (deletes free space, so they must stay possible).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fissile.store import schema
from fissile.store.base import AlreadyExists, Change, NotFound, Record, StaleWrite, Subscriber
from fissile.store.space import SpaceReserve, StorageFull, writing
from fissile.store.sqlite_revisions import SCHEMA as REVISIONS_SCHEMA
from fissile.store.sqlite_revisions import SQLiteRevisions

_RESOURCES = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    generation INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, name)
)
"""

#: ``MIGRATIONS[v]`` turns a version ``v - 1`` file into version ``v`` (``schema.py``). Version
#: 0 is a new file or one from before versions were recorded (``IF NOT EXISTS`` adopts it).
MIGRATIONS: dict[int, list[str]] = {1: [_RESOURCES, REVISIONS_SCHEMA]}


def recorded_version(path: Path) -> int:
    """The schema version the SQLite file at ``path`` records (0: none yet), read without
    changing anything."""
    if not path.is_file():
        raise FileNotFoundError(f"no store at {path}")
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        (found,) = db.execute("PRAGMA user_version").fetchone()
    finally:
        db.close()
    return int(found)


def _now() -> datetime:
    return datetime.now(UTC)


class SQLiteStore(SQLiteRevisions):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._reserve: SpaceReserve | None = None
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._reserve = SpaceReserve(self.path.with_name(self.path.name + ".reserve"))
            self._reserve.keep()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate(str(path))
        self._lock = threading.RLock()
        self._subscribers: list[Subscriber] = []

    def _migrate(self, where: str) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            (found,) = self._db.execute("PRAGMA user_version").fetchone()
            schema.upgrade(
                int(found),
                MIGRATIONS,
                self._db.execute,
                lambda version: self._db.execute(f"PRAGMA user_version = {int(version)}"),
                where=where,
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            self._db.close()
            raise
        self._db.execute("COMMIT")

    # -- reads --------------------------------------------------------------------------

    def find(self, kind: str, name: str) -> Record | None:
        with self._lock:
            row = self._db.execute(
                "SELECT kind, name, data, generation, created_at, updated_at"
                " FROM resources WHERE kind = ? AND name = ?",
                (kind, name),
            ).fetchone()
        return None if row is None else _record(row)

    def get(self, kind: str, name: str) -> Record:
        record = self.find(kind, name)
        if record is None:
            raise NotFound(kind, name)
        return record

    def list(self, kind: str) -> list[Record]:
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, name, data, generation, created_at, updated_at"
                " FROM resources WHERE kind = ? ORDER BY name",
                (kind,),
            ).fetchall()
        return [_record(row) for row in rows]

    # -- writes -------------------------------------------------------------------------

    def create(self, kind: str, name: str, data: dict[str, Any]) -> Record:
        now = _now()
        record = Record(kind, name, data, 1, now, now)
        with self._lock:
            try:
                self._write(
                    "INSERT INTO resources VALUES (?, ?, ?, ?, ?, ?)",
                    (kind, name, _dump(data), 1, now.isoformat(), now.isoformat()),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(kind, name) from None
        self._notify(Change("created", record))
        return record

    def update(
        self, kind: str, name: str, data: dict[str, Any], *, generation: int | None = None
    ) -> Record:
        with self._lock:
            previous = self.get(kind, name)
            if generation is not None and generation != previous.generation:
                raise StaleWrite(kind, name, generation, previous.generation)
            record = Record(kind, name, data, previous.generation + 1, previous.created_at, _now())
            self._write(
                "UPDATE resources SET data = ?, generation = ?, updated_at = ?"
                " WHERE kind = ? AND name = ?",
                (
                    _dump(data),
                    record.generation,
                    record.updated_at.isoformat(),
                    kind,
                    name,
                ),
            )
        self._notify(Change("updated", record, previous))
        return record

    def delete(self, kind: str, name: str) -> Record:
        with self._lock:
            record = self.get(kind, name)
            delete = "DELETE FROM resources WHERE kind = ? AND name = ?"
            try:
                self._write(delete, (kind, name))
            except StorageFull:
                if self._reserve is None or not self._reserve.release():
                    raise
                self._write(delete, (kind, name))
        self._notify(Change("deleted", record, record))
        return record

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with writing(self.path.parent):
            self._db.execute(sql, args)
        if self._reserve is not None and not self._reserve.held:
            # Space came back (this write fit): take the reserve again if it fits too.
            self._reserve.keep()

    # -- notifications ------------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def _notify(self, change: Change) -> None:
        for subscriber in list(self._subscribers):
            subscriber(change)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True, default=str)


def _record(row: tuple[str, str, str, int, str, str]) -> Record:
    kind, name, data, generation, created, updated = row
    return Record(
        kind,
        name,
        json.loads(data),
        generation,
        datetime.fromisoformat(created),
        datetime.fromisoformat(updated),
    )
