"""The students-courses store: PostgreSQL when ``DATABASE_URL`` names one, else SQLite.

Both speak DB-API 2, so one set of queries serves both; only the placeholders (``?`` for
SQLite, ``%s`` for psycopg) and the schema's id columns differ.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CONNECT_TIMEOUT = 5  # seconds: a database that does not answer is down, not slow


class DatabaseDown(Exception):
    """The database cannot be reached (or dropped the connection): the caller gets 503."""


class Conflict(Exception):
    """A uniqueness or reference rule was broken (a second student with one email, ...)."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS students (
    id {id},
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS courses (
    id {id},
    code TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS enrolments (
    student_id INTEGER NOT NULL REFERENCES students(id) ON DELETE CASCADE,
    course_id INTEGER NOT NULL REFERENCES courses(id) ON DELETE CASCADE,
    PRIMARY KEY (student_id, course_id)
);
"""


class Database:
    """One connection, opened on first use and opened again after the database was lost.
    An instance serves one request at a time (or serializes them here), so one is enough."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url if url is not None else os.environ.get("DATABASE_URL", "")
        self.kind = (
            "postgresql" if self.url.startswith(("postgres://", "postgresql://")) else ("sqlite")
        )
        self._connection: Any = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:{self._sqlite_path()}"
        return "postgresql"  # never the URL: it may carry a password

    def _sqlite_path(self) -> str:
        if self.url.startswith("sqlite:///"):
            return self.url.removeprefix("sqlite:///") or ":memory:"
        return os.path.join(tempfile.gettempdir(), "school.sqlite3")

    def _connect(self) -> Any:
        if self.kind == "sqlite":
            lite = sqlite3.connect(self._sqlite_path(), check_same_thread=False)
            lite.execute("PRAGMA foreign_keys = ON")
            lite.executescript(SCHEMA.format(id="INTEGER PRIMARY KEY AUTOINCREMENT"))
            return lite
        import psycopg  # only a PostgreSQL deployment needs the driver

        try:
            connection = psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT)
            with connection.transaction():
                for statement in SCHEMA.format(id="SERIAL PRIMARY KEY").split(";"):
                    if statement.strip():
                        connection.execute(statement)
        except psycopg.OperationalError as exc:
            raise DatabaseDown(f"cannot reach PostgreSQL: {_first_line(exc)}") from None
        except psycopg.IntegrityError:
            pass  # another instance created the tables at the same moment: they exist now
        return connection

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A cursor whose work is committed when the block ends, rolled back if it raises."""
        with self._lock:
            if self._connection is None:
                self._connection = self._connect()
            connection = self._connection
            try:
                cursor = connection.cursor()
                yield Cursor(cursor, self.kind)
                connection.commit()
            except BaseException as exc:
                self._rollback(connection)
                if _is_down(exc):
                    self._connection = None  # reconnect on the next request
                    raise DatabaseDown(f"lost the database: {_first_line(exc)}") from None
                if _is_integrity(exc):
                    raise Conflict(_first_line(exc)) from None
                raise

    def _rollback(self, connection: Any) -> None:
        try:
            connection.rollback()
        except Exception:
            self._connection = None

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


class Cursor:
    """A DB-API cursor taking ``?`` placeholders whatever the database."""

    def __init__(self, cursor: Any, kind: str) -> None:
        self._cursor = cursor
        self._postgresql = kind == "postgresql"

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> Cursor:
        self._cursor.execute(sql.replace("?", "%s") if self._postgresql else sql, args)
        return self

    def one(self) -> dict[str, Any] | None:
        row = self._cursor.fetchone()
        return None if row is None else self._record(row)

    def all(self) -> list[dict[str, Any]]:
        return [self._record(row) for row in self._cursor.fetchall()]

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    def _record(self, row: Any) -> dict[str, Any]:
        names = [column[0] for column in self._cursor.description]
        return dict(zip(names, row, strict=True))


def _is_down(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return "unable to open" in str(exc) or "disk I/O" in str(exc)
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def _is_integrity(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.IntegrityError):
        return True
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(exc, psycopg.IntegrityError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
