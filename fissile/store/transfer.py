"""``fissile store migrate``: one node's state (a SQLite file) into a PostgreSQL store.

Rows move as they are — generations, timestamps, revision numbers and pruned marks — in one
PostgreSQL transaction, so a failure leaves the target as it was. Both ends are opened as
stores first, which brings each schema to the current version (or refuses a newer one).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from fissile.store.base import StoreError


class TargetNotEmpty(StoreError):
    pass


@dataclass
class Moved:
    resources: Counter[str] = field(default_factory=Counter)  # per kind
    revisions: int = 0


def sqlite_to_postgres(source: Path, target: str, *, force: bool = False) -> Moved:
    import psycopg

    from fissile.store.postgres import PostgresStore
    from fissile.store.sqlite import SQLiteStore

    if not source.is_file():
        raise StoreError(f"no SQLite store at {source}")
    SQLiteStore(source).close()
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as db:
        resources = db.execute(
            "SELECT kind, name, data, generation, created_at, updated_at FROM resources"
            " ORDER BY kind, name"
        ).fetchall()
        revisions = db.execute(
            "SELECT function, number, created_at, deploy, pruned, data FROM revisions"
            " ORDER BY function, number"
        ).fetchall()
    PostgresStore(target).close()
    moved = Moved()
    with psycopg.connect(target) as conn, conn.transaction():
        # Nodes starting or writing meanwhile wait for the whole state, or see none of it.
        conn.execute("LOCK TABLE resources, revisions IN EXCLUSIVE MODE")
        row = conn.execute(
            "SELECT (SELECT count(*) FROM resources) + (SELECT count(*) FROM revisions)"
        ).fetchone()
        if row is not None and row[0] and not force:
            raise TargetNotEmpty(
                f"the target store holds {row[0]} rows already; --force replaces them"
            )
        conn.execute("DELETE FROM resources")
        conn.execute("DELETE FROM revisions")
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO resources (kind, name, data, generation, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (kind, name, data, generation, _when(created), _when(updated))
                    for kind, name, data, generation, created, updated in resources
                ],
            )
            cursor.executemany(
                "INSERT INTO revisions (function, number, created_at, deploy, pruned, data)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (function, number, _when(created), deploy, bool(pruned), data)
                    for function, number, created, deploy, pruned, data in revisions
                ],
            )
    moved.resources.update(str(kind) for kind, *_ in resources)
    moved.revisions = len(revisions)
    return moved


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)
