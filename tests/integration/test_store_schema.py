"""Schema versions (fissile/store/schema.py) in both stores: recorded, upgraded, refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from fissile.store import open_store, schema
from fissile.store import sqlite as sqlite_store
from fissile.store.schema import SchemaTooNew
from fissile.store.sqlite import SQLiteStore

# The tables exactly as fissile wrote them before it recorded a schema version.
PRE_VERSIONING = """
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    generation INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS revisions (
    function TEXT NOT NULL,
    number INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    deploy TEXT,
    pruned INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL,
    PRIMARY KEY (function, number)
);
INSERT INTO resources VALUES ('functions', 'old', '{"v":1}', 3,
    '2025-01-02T03:04:05.000006+00:00', '2025-01-02T03:04:06+00:00');
INSERT INTO revisions VALUES ('old', 1, '2025-01-02T03:04:05+00:00', 'd1', 0, '{}');
"""


def recorded_version(url: str) -> int:
    scheme, _, rest = url.partition("://")
    if scheme == "sqlite":
        with sqlite3.connect(rest) as db:
            return int(db.execute("PRAGMA user_version").fetchone()[0])
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version FROM fissile_schema").fetchone()
        assert row is not None
        return int(row[0])


def set_version(url: str, version: int) -> None:
    scheme, _, rest = url.partition("://")
    if scheme == "sqlite":
        with sqlite3.connect(rest) as db:
            db.execute(f"PRAGMA user_version = {version}")
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE fissile_schema SET version = %s", (version,))


def test_a_new_store_records_the_current_version(store_url: str) -> None:
    open_store(store_url).close()
    assert recorded_version(store_url) == schema.VERSION
    # Opening again changes nothing.
    open_store(store_url).close()
    assert recorded_version(store_url) == schema.VERSION


def test_a_newer_schema_refuses_to_open(store_url: str) -> None:
    open_store(store_url).close()
    set_version(store_url, schema.VERSION + 7)
    with pytest.raises(SchemaTooNew) as info:
        open_store(store_url)
    message = str(info.value)
    assert f"schema version {schema.VERSION + 7}" in message
    assert f"versions up to {schema.VERSION}" in message
    # Refused, not touched.
    assert recorded_version(store_url) == schema.VERSION + 7


def test_a_pre_versioning_file_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "fissile.db"
    with sqlite3.connect(path) as db:
        db.executescript(PRE_VERSIONING)
    store = SQLiteStore(path)
    try:
        old = store.get("functions", "old")
        assert (old.data, old.generation) == ({"v": 1}, 3)
        assert old.created_at.microsecond == 6
        assert [r.deploy for r in store.revisions("old")] == ["d1"]
        assert store.add_revision("old", "d2", {}).number == 2
    finally:
        store.close()
    assert recorded_version(f"sqlite://{path}") == schema.VERSION


def test_migrations_run_in_order_and_are_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "fissile.db"
    SQLiteStore(path).close()
    newer = {
        **sqlite_store.MIGRATIONS,
        schema.VERSION + 1: ["CREATE TABLE nodes (name TEXT PRIMARY KEY)"],
        schema.VERSION + 2: ["ALTER TABLE nodes ADD COLUMN address TEXT"],
    }
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", newer)
    monkeypatch.setattr(schema, "VERSION", schema.VERSION + 2)
    SQLiteStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION
        assert [c[1] for c in db.execute("PRAGMA table_info(nodes)")] == ["name", "address"]


def test_a_failed_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "fissile.db"
    SQLiteStore(path).close()
    broken = {
        **sqlite_store.MIGRATIONS,
        schema.VERSION + 1: ["CREATE TABLE nodes (name TEXT)", "NOT SQL AT ALL"],
    }
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", broken)
    monkeypatch.setattr(schema, "VERSION", schema.VERSION + 1)
    with pytest.raises(sqlite3.OperationalError):
        SQLiteStore(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == schema.VERSION - 1
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert "nodes" not in tables


def test_steps() -> None:
    migrations = {1: ["a"], 2: ["b"], 3: ["c"]}
    assert schema.steps(1, migrations, where="x", known=3) == [(2, ["b"]), (3, ["c"])]
    assert schema.steps(3, migrations, where="x", known=3) == []
    with pytest.raises(SchemaTooNew, match=r"at x has schema version 4, .* up to 3"):
        schema.steps(4, migrations, where="x", known=3)
    with pytest.raises(schema.StoreError, match="no migration to schema version 2"):
        schema.steps(0, {1: ["a"], 3: ["c"]}, where="x", known=3)
