"""What every PostgreSQL user of the platform opens the same way: one autocommitted connection
in a pool (the store, the shared invocations, the timer and watch claims), and tables created
under an advisory lock so that nodes starting together do not race to create them."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

Configure = Callable[[psycopg.Connection[TupleRow]], None]


def open_pool(url: str, name: str, configure: Configure | None = None) -> ConnectionPool:
    """One connection, autocommitted: calls run on the event loop one at a time, so a second
    connection would only idle. A call waits 5 s for it while the database is away (on the
    loop: keep it short), then fails."""
    return ConnectionPool(
        url,
        min_size=1,
        max_size=1,
        kwargs={"autocommit": True},
        timeout=5.0,
        configure=configure,
        open=True,
        name=name,
    )


def create_tables(pool: ConnectionPool, lock: int, statements: Iterable[str]) -> None:
    """Run ``statements`` (``CREATE ... IF NOT EXISTS``) in one transaction holding the
    advisory lock ``lock``."""
    with pool.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
        for statement in statements:
            if statement.strip():
                conn.execute(statement.encode())
