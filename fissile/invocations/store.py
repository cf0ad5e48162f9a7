"""The durable record of asynchronous invocations: one SQLite file in WAL mode beside the
platform's store, and a directory of files for large bodies.

An invocation is committed before its 202 is sent. WAL with ``synchronous=NORMAL`` survives the
platform being killed (SIGKILL, OOM), which is what "accepted work survives" asks; it can lose
the last commits on a power cut (fsync on every accept would cap intake at the disk's flush
rate). Writes are synchronous on the event loop: an insert costs tens of microseconds. On a full
disk every write raises ``StorageFull`` and changes nothing.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fissile.invocations.records import FINAL, Invocation, Response, Status
from fissile.store.space import writing

# Bodies above this go to files: the database stays small and its pages hot.
INLINE_LIMIT = 64 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS invocations (
    id TEXT PRIMARY KEY,
    function TEXT NOT NULL,
    status TEXT NOT NULL,
    method TEXT NOT NULL,
    target TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB,
    body_in_file INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    error TEXT,
    response_status INTEGER,
    response_headers TEXT,
    response_body BLOB,
    response_in_file INTEGER NOT NULL DEFAULT 0,
    callback_url TEXT,
    callback_state TEXT,
    callback_attempts INTEGER NOT NULL DEFAULT 0,
    callback_error TEXT
);
CREATE INDEX IF NOT EXISTS invocations_status ON invocations (status, created_at);
CREATE INDEX IF NOT EXISTS invocations_finished ON invocations (finished_at);
-- Covers census(): counting by function and status reads this index, not the rows' bodies.
CREATE INDEX IF NOT EXISTS invocations_function ON invocations (function, status);
"""

_COLUMNS = (
    "id, function, status, method, target, headers, max_attempts, attempts, created_at,"
    " started_at, finished_at, next_attempt_at, error, response_status, response_headers,"
    " response_body, response_in_file, callback_url, callback_state, callback_attempts,"
    " callback_error"
)


class InvocationStore:
    def __init__(self, path: Path, bodies: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        bodies.mkdir(parents=True, exist_ok=True)
        os.chmod(bodies, 0o700)
        self.bodies = bodies
        self.data_dir = path.parent
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writes -------------------------------------------------------------------------

    def add(self, invocation: Invocation, body: bytes) -> None:
        in_file = len(body) > INLINE_LIMIT
        if in_file:
            self._write_file(invocation.id, "request", body)
        try:
            self._execute(
                "INSERT INTO invocations (id, function, status, method, target, headers, body,"
                " body_in_file, max_attempts, created_at, next_attempt_at, callback_url,"
                " callback_state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    invocation.id,
                    invocation.function,
                    str(invocation.status),
                    invocation.method,
                    invocation.target,
                    json.dumps(invocation.headers),
                    None if in_file else body,
                    int(in_file),
                    invocation.max_attempts,
                    invocation.created_at,
                    invocation.next_attempt_at,
                    invocation.callback_url,
                    invocation.callback_state,
                ),
            )
        except BaseException:
            if in_file:
                self._remove_file(invocation.id, "request")
            raise

    def started(self, invocation: Invocation) -> None:
        self._execute(
            "UPDATE invocations SET status = ?, attempts = ?, started_at = ? WHERE id = ?",
            (str(invocation.status), invocation.attempts, invocation.started_at, invocation.id),
        )

    def requeued(self, invocation: Invocation) -> None:
        self._execute(
            "UPDATE invocations SET status = ?, attempts = ?, next_attempt_at = ?, error = ?"
            " WHERE id = ?",
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
        in_file = response is not None and len(response.body) > INLINE_LIMIT
        if in_file:
            assert response is not None
            self._write_file(invocation.id, "response", response.body)
        try:
            self._record_finished(invocation, in_file)
        except BaseException:
            if in_file:
                self._remove_file(invocation.id, "response")
            raise
        self._remove_file(invocation.id, "request")

    def _record_finished(self, invocation: Invocation, in_file: bool) -> None:
        response = invocation.response
        self._execute(
            "UPDATE invocations SET status = ?, attempts = ?, started_at = ?, finished_at = ?,"
            " error = ?, response_status = ?, response_headers = ?, response_body = ?,"
            " response_in_file = ?, callback_state = ?, body = NULL WHERE id = ?",
            (
                str(invocation.status),
                invocation.attempts,
                invocation.started_at,
                invocation.finished_at,
                invocation.error,
                None if response is None else response.status,
                None if response is None else json.dumps(response.headers),
                None if response is None or in_file else response.body,
                int(in_file),
                invocation.callback_state,
                invocation.id,
            ),
        )

    def callback_progress(self, invocation: Invocation) -> None:
        self._execute(
            "UPDATE invocations SET callback_state = ?, callback_attempts = ?,"
            " callback_error = ? WHERE id = ?",
            (
                invocation.callback_state,
                invocation.callback_attempts,
                invocation.callback_error,
                invocation.id,
            ),
        )

    def expire(self, finished_before: float) -> int:
        """Forget finished invocations older than the retention period; returns how many."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, response_in_file FROM invocations WHERE finished_at < ?"
                " AND (callback_state IS NULL OR callback_state != 'pending')",
                (finished_before,),
            ).fetchall()
            if not rows:
                return 0
            with writing(self.data_dir):
                self._db.executemany(
                    "DELETE FROM invocations WHERE id = ?", [(r[0],) for r in rows]
                )
        for invocation_id, in_file in rows:
            if in_file:
                self._remove_file(invocation_id, "response")
        return len(rows)

    # -- reads --------------------------------------------------------------------------

    def get(self, invocation_id: str) -> Invocation | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM invocations WHERE id = ?", (invocation_id,)
            ).fetchone()
        return None if row is None else self._invocation(row)

    def request_body(self, invocation_id: str) -> bytes:
        with self._lock:
            row = self._db.execute(
                "SELECT body, body_in_file FROM invocations WHERE id = ?", (invocation_id,)
            ).fetchone()
        if row is None:
            return b""
        body, in_file = row
        if in_file:
            return self._read_file(invocation_id, "request")
        return bytes(body or b"")

    def list(
        self,
        status: str | None = None,
        function: str | None = None,
        limit: int = 100,
    ) -> builtins.list[Invocation]:
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if function is not None:
            where.append("function = ?")
            args.append(function)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM invocations{clause} ORDER BY created_at DESC, id LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [self._invocation(row) for row in rows]

    def unfinished(self) -> builtins.list[Invocation]:
        """Queued and running invocations, oldest first (what a starting platform resumes)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM invocations WHERE status IN ('queued', 'running')"
                " ORDER BY created_at, id"
            ).fetchall()
        return [self._invocation(row) for row in rows]

    def pending_callbacks(self) -> builtins.list[Invocation]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM invocations WHERE callback_state = 'pending'"
                " AND status IN (" + ", ".join(f"'{s}'" for s in sorted(FINAL)) + ")"
            ).fetchall()
        return [self._invocation(row) for row in rows]

    def census(self) -> dict[tuple[str, str], int]:
        """Invocations kept, by (function, status): one GROUP BY, no rows loaded."""
        with self._lock:
            rows = self._db.execute(
                "SELECT function, status, COUNT(*) FROM invocations GROUP BY function, status"
            ).fetchall()
        return {(function, status): count for function, status, count in rows}

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT status, COUNT(*) FROM invocations GROUP BY status"
            ).fetchall()
        return {status: count for status, count in rows}

    # -- helpers ------------------------------------------------------------------------

    def _execute(self, sql: str, args: Iterable[Any]) -> None:
        with self._lock, writing(self.data_dir):
            self._db.execute(sql, tuple(args))

    def _invocation(self, row: tuple[Any, ...]) -> Invocation:
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
            response_in_file,
            callback_url,
            callback_state,
            callback_attempts,
            callback_error,
        ) = row
        response = None
        if response_status is not None:
            body = (
                self._read_file(invocation_id, "response")
                if response_in_file
                else bytes(response_body or b"")
            )
            response = Response(
                response_status, [(str(k), str(v)) for k, v in json.loads(response_headers)], body
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
        )

    def _path(self, invocation_id: str, what: str) -> Path:
        return self.bodies / f"{invocation_id}.{what}"

    def _write_file(self, invocation_id: str, what: str, data: bytes) -> None:
        path = self._path(invocation_id, what)
        temporary = path.with_suffix(".tmp")
        try:
            with writing(self.data_dir):
                temporary.write_bytes(data)
                temporary.replace(path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def _read_file(self, invocation_id: str, what: str) -> bytes:
        try:
            return self._path(invocation_id, what).read_bytes()
        except FileNotFoundError:
            return b""

    def _remove_file(self, invocation_id: str, what: str) -> None:
        try:
            self._path(invocation_id, what).unlink()
        except FileNotFoundError:
            pass
