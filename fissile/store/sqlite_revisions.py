"""Revisions in the SQLite store: one table beside the resources, in the same file.

A mixin of ``SQLiteStore`` (its connection, lock and full-disk handling); revisions notify
no subscriber: the control plane that writes them tells the executor itself.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime
from typing import Any

from fissile.store.revisions import HISTORY, Revision

SCHEMA = """
CREATE TABLE IF NOT EXISTS revisions (
    function TEXT NOT NULL,
    number INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    deploy TEXT,
    pruned INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL,
    PRIMARY KEY (function, number)
)
"""

_COLUMNS = "function, number, created_at, deploy, pruned, data"


class SQLiteRevisions:
    _db: sqlite3.Connection
    _lock: threading.RLock

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def add_revision(self, function: str, deploy: str | None, data: dict[str, Any]) -> Revision:
        now = datetime.now(UTC)
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(MAX(number), 0) FROM revisions WHERE function = ?", (function,)
            ).fetchone()
            number = int(row[0]) + 1
            self._write(
                f"INSERT INTO revisions ({_COLUMNS}) VALUES (?, ?, ?, ?, 0, ?)",
                (function, number, now.isoformat(), deploy, _dump(data)),
            )
        return Revision(function, number, now, data, deploy)

    def revisions(self, function: str) -> list[Revision]:
        return self._select("WHERE function = ? ORDER BY number", (function,))

    def revision(self, function: str, number: int) -> Revision | None:
        found = self._select("WHERE function = ? AND number = ?", (function, number))
        return found[0] if found else None

    def latest_revision(self, function: str) -> Revision | None:
        found = self._select("WHERE function = ? ORDER BY number DESC LIMIT 1", (function,))
        return found[0] if found else None

    def prune_revisions(self, function: str, keep: int) -> list[Revision]:
        with self._lock:
            newest = self.latest_revision(function)
            if newest is None:
                return []
            below = newest.number - max(keep, 1)
            pruned = self._select(
                "WHERE function = ? AND number <= ? AND pruned = 0 ORDER BY number",
                (function, below),
            )
            if pruned:
                self._write(
                    "UPDATE revisions SET pruned = 1 WHERE function = ? AND number <= ?",
                    (function, below),
                )
            forgotten = newest.number - max(keep, HISTORY)
            if forgotten > 0:
                self._write(
                    "DELETE FROM revisions WHERE function = ? AND number <= ?",
                    (function, forgotten),
                )
        return pruned

    def forget_revisions(self, function: str) -> list[Revision]:
        with self._lock:
            gone = self.revisions(function)
            if gone:
                self._write("DELETE FROM revisions WHERE function = ?", (function,))
        return gone

    def kept_deploys(self) -> set[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT deploy FROM revisions WHERE pruned = 0 AND deploy IS NOT NULL"
            ).fetchall()
        return {str(row[0]) for row in rows}

    def _select(self, where: str, args: tuple[Any, ...]) -> list[Revision]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM revisions {where}", args).fetchall()
        return [
            Revision(
                function,
                number,
                datetime.fromisoformat(created),
                json.loads(data),
                deploy,
                bool(pruned),
            )
            for function, number, created, deploy, pruned, data in rows
        ]


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True, default=str)
