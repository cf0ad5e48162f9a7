"""Revisions in the PostgreSQL store: one table beside the resources, in the same schema.

A mixin of ``PostgresStore`` (its connection pool and lock). Revisions are read from the
database, not from a copy: only control-plane operations on one function read them.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from fissile.store.revisions import HISTORY, Revision

SCHEMA = """
CREATE TABLE IF NOT EXISTS revisions (
    function TEXT NOT NULL,
    number INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    deploy TEXT,
    pruned BOOLEAN NOT NULL DEFAULT false,
    data TEXT NOT NULL,
    PRIMARY KEY (function, number)
)
"""

_COLUMNS = "function, number, created_at, deploy, pruned, data"


class PostgresRevisions:
    _lock: threading.RLock

    def _execute(self, query: str, args: tuple[Any, ...] = ()) -> list[TupleRow]:
        raise NotImplementedError

    def add_revision(self, function: str, deploy: str | None, data: dict[str, Any]) -> Revision:
        now = datetime.now(UTC)
        # Two nodes numbering the same function at once: the loser's insert collides and
        # takes the next number.
        for _ in range(10):
            try:
                with self._lock:
                    rows = self._execute(
                        f"INSERT INTO revisions ({_COLUMNS})"
                        " SELECT %s, COALESCE(MAX(number), 0) + 1, %s, %s, false, %s"
                        " FROM revisions WHERE function = %s RETURNING number",
                        (function, now, deploy, _dump(data), function),
                    )
            except psycopg.errors.UniqueViolation:
                continue
            return Revision(function, int(rows[0][0]), now, data, deploy)
        raise RuntimeError(f"could not number a revision of {function!r}")

    def revisions(self, function: str) -> list[Revision]:
        return self._select("WHERE function = %s ORDER BY number", (function,))

    def revision(self, function: str, number: int) -> Revision | None:
        found = self._select("WHERE function = %s AND number = %s", (function, number))
        return found[0] if found else None

    def latest_revision(self, function: str) -> Revision | None:
        found = self._select("WHERE function = %s ORDER BY number DESC LIMIT 1", (function,))
        return found[0] if found else None

    def prune_revisions(self, function: str, keep: int) -> list[Revision]:
        with self._lock:
            newest = self.latest_revision(function)
            if newest is None:
                return []
            below = newest.number - max(keep, 1)
            pruned = [
                _revision(row)
                for row in self._execute(
                    "UPDATE revisions SET pruned = true"
                    " WHERE function = %s AND number <= %s AND NOT pruned"
                    f" RETURNING {_COLUMNS}",
                    (function, below),
                )
            ]
            forgotten = newest.number - max(keep, HISTORY)
            if forgotten > 0:
                self._execute(
                    "DELETE FROM revisions WHERE function = %s AND number <= %s",
                    (function, forgotten),
                )
        # Reported as they were before this call marked them.
        return sorted(
            (Revision(r.function, r.number, r.created_at, r.data, r.deploy, False) for r in pruned),
            key=lambda r: r.number,
        )

    def forget_revisions(self, function: str) -> list[Revision]:
        with self._lock:
            rows = self._execute(
                f"DELETE FROM revisions WHERE function = %s RETURNING {_COLUMNS}", (function,)
            )
        return sorted(map(_revision, rows), key=lambda r: r.number)

    def kept_deploys(self) -> set[str]:
        rows = self._execute(
            "SELECT DISTINCT deploy FROM revisions WHERE NOT pruned AND deploy IS NOT NULL"
        )
        return {str(row[0]) for row in rows}

    def _select(self, where: str, args: tuple[Any, ...]) -> list[Revision]:
        return [
            _revision(row)
            for row in self._execute(f"SELECT {_COLUMNS} FROM revisions {where}", args)
        ]


def _revision(row: TupleRow) -> Revision:
    function, number, created, deploy, pruned, data = row
    return Revision(
        str(function),
        int(number),
        created.astimezone(UTC),
        json.loads(data),
        deploy,
        bool(pruned),
    )


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True, default=str)
