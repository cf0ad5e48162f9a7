"""Where resources live. ``open_store`` picks an implementation by URL scheme, lazily."""

from __future__ import annotations

from fissile.store.base import (
    AlreadyExists,
    Change,
    NotFound,
    Record,
    StaleWrite,
    Store,
    StoreError,
    StoreUnavailable,
)
from fissile.store.revisions import Revision
from fissile.store.space import StorageFull

__all__ = [
    "AlreadyExists",
    "Change",
    "NotFound",
    "Record",
    "Revision",
    "StaleWrite",
    "StorageFull",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "open_store",
]


def open_store(url: str) -> Store:
    """Open a store from a URL such as ``sqlite:///path/fissile.db`` or ``postgresql://...``.

    Opened inside a running event loop, a PostgreSQL store tells its subscribers about other
    processes' changes on that loop (``postgres.py``); elsewhere, in its listening thread.
    """
    scheme, _, rest = url.partition("://")
    if scheme == "sqlite":
        from fissile.store.sqlite import SQLiteStore

        return SQLiteStore(rest)
    if scheme in ("postgresql", "postgres"):
        import asyncio

        from fissile.store.postgres import PostgresStore

        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        return PostgresStore(url, loop=loop)
    raise ValueError(f"unknown store {scheme!r}; supported: sqlite, postgresql")
