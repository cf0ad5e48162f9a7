"""The store protocol (fissile/store/base.py) on a real SQLite file and a real PostgreSQL
schema: the same test bodies for both (``any_store``, ``store_url``: integration conftest)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fissile.store import (
    AlreadyExists,
    Change,
    NotFound,
    StaleWrite,
    Store,
    StoreError,
    open_store,
)
from fissile.store.sqlite import SQLiteStore


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


def test_create_and_get(store: Store) -> None:
    before = datetime.now(UTC)
    record = store.create("functions", "hello", {"name": "hello", "timeout": 1.5})
    assert (record.kind, record.name, record.generation) == ("functions", "hello", 1)
    assert record.data == {"name": "hello", "timeout": 1.5}
    assert record.created_at == record.updated_at
    assert record.created_at >= before
    assert record.created_at.tzinfo is not None
    assert store.get("functions", "hello") == record
    assert store.find("functions", "hello") == record


def test_missing_records(store: Store) -> None:
    assert store.find("functions", "nope") is None
    with pytest.raises(NotFound, match="functions/nope not found") as info:
        store.get("functions", "nope")
    assert (info.value.kind, info.value.name) == ("functions", "nope")
    with pytest.raises(NotFound):
        store.update("functions", "nope", {})
    with pytest.raises(NotFound):
        store.delete("functions", "nope")


def test_duplicate_create(store: Store) -> None:
    store.create("functions", "hello", {"v": 1})
    with pytest.raises(AlreadyExists, match="functions/hello already exists"):
        store.create("functions", "hello", {"v": 2})
    assert store.get("functions", "hello").data == {"v": 1}
    # The same name in another kind is a different record.
    assert store.create("packages", "hello", {"v": 3}).generation == 1


def test_list_is_per_kind_and_sorted(store: Store) -> None:
    for name in ["charlie", "alpha", "bravo"]:
        store.create("functions", name, {"name": name})
    store.create("packages", "zulu", {})
    assert [r.name for r in store.list("functions")] == ["alpha", "bravo", "charlie"]
    assert [r.name for r in store.list("packages")] == ["zulu"]
    assert store.list("environments") == []


def test_update_bumps_generation_and_keeps_created_at(store: Store) -> None:
    created = store.create("functions", "hello", {"v": 1})
    updated = store.update("functions", "hello", {"v": 2})
    assert updated.generation == 2
    assert updated.data == {"v": 2}
    assert updated.created_at == created.created_at
    assert updated.updated_at >= created.updated_at
    assert store.get("functions", "hello") == updated
    assert store.update("functions", "hello", {"v": 3}).generation == 3


def test_update_with_generation_detects_stale_writes(store: Store) -> None:
    store.create("functions", "hello", {"v": 1})
    assert store.update("functions", "hello", {"v": 2}, generation=1).generation == 2
    with pytest.raises(StaleWrite, match=r"generation 2, expected 1"):
        store.update("functions", "hello", {"v": 3}, generation=1)
    assert store.get("functions", "hello").data == {"v": 2}
    assert issubclass(StaleWrite, StoreError)


def test_delete(store: Store) -> None:
    store.create("functions", "hello", {"v": 1})
    deleted = store.delete("functions", "hello")
    assert deleted.data == {"v": 1}
    assert store.find("functions", "hello") is None
    # The name can be used again, from generation 1.
    assert store.create("functions", "hello", {"v": 2}).generation == 1


def test_change_notifications(store: Store) -> None:
    changes: list[Change] = []
    store.subscribe(changes.append)
    created = store.create("functions", "hello", {"v": 1})
    updated = store.update("functions", "hello", {"v": 2})
    deleted = store.delete("functions", "hello")
    assert [c.action for c in changes] == ["created", "updated", "deleted"]
    assert changes[0].record == created and changes[0].previous is None
    assert changes[1].record == updated and changes[1].previous == created
    assert changes[2].record == deleted and changes[2].previous == deleted


def test_no_notification_for_failed_writes(store: Store) -> None:
    store.create("functions", "hello", {"v": 1})
    changes: list[Change] = []
    store.subscribe(changes.append)
    with pytest.raises(AlreadyExists):
        store.create("functions", "hello", {})
    with pytest.raises(StaleWrite):
        store.update("functions", "hello", {}, generation=7)
    with pytest.raises(NotFound):
        store.delete("functions", "other")
    assert changes == []


def test_subscribers_see_the_committed_state(store: Store) -> None:
    seen: list[int] = []
    store.subscribe(lambda change: seen.append(store.get("functions", "hello").generation))
    store.create("functions", "hello", {})
    store.update("functions", "hello", {})
    assert seen == [1, 2]


def test_persistence_across_reopen(store_url: str) -> None:
    first = open_store(store_url)
    first.create("functions", "hello", {"nested": {"list": [1, "two", None]}})
    updated = first.update("functions", "hello", {"nested": {"list": [3]}})
    first.create("environments", "python", {"poolsize": 3})
    first.close()
    second = open_store(store_url)
    try:
        assert second.get("functions", "hello") == updated
        assert [r.name for r in second.list("environments")] == ["python"]
    finally:
        second.close()


def test_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "fissile.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_non_json_values_are_stored_as_strings(store: Store) -> None:
    when = datetime(2024, 5, 6, tzinfo=UTC)
    store.create("functions", "hello", {"at": when})
    assert store.get("functions", "hello").data == {"at": str(when)}


def test_merged(store: Store) -> None:
    record = store.create("functions", "hello", {"name": "hello"})
    assert record.merged() == {
        "name": "hello",
        "generation": 1,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def test_open_store(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path / 'x.db'}")
    try:
        assert isinstance(store, SQLiteStore)
        store.create("functions", "a", {})
    finally:
        store.close()
    assert (tmp_path / "x.db").is_file()
    with pytest.raises(ValueError, match="unknown store 'mysql'; supported: sqlite, postgresql"):
        open_store("mysql://localhost/fissile")
