"""fissile/store/postgres.py: changes made elsewhere reach a store's subscribers.

Two stores on one fresh schema stand for two nodes; a bare connection stands for any other
writer. Waits are generous deadlines, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from pgkit import fresh_schema

from fissile.store import Change, StoreError, StoreUnavailable, open_store
from fissile.store.postgres import PostgresStore

DEADLINE = 20.0


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


@pytest.fixture
def pair(url: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    first, second = PostgresStore(url), PostgresStore(url)
    yield first, second
    first.close()
    second.close()


def wait_until(condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def summary(changes: list[Change]) -> list[tuple[str, str, int, int | None]]:
    return [
        (
            c.action,
            c.record.name,
            c.record.generation,
            None if c.previous is None else c.previous.generation,
        )
        for c in changes
    ]


def test_another_stores_writes_reach_subscribers(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    writer, follower = pair
    seen: list[Change] = []
    follower.subscribe(seen.append)
    created = writer.create("functions", "hello", {"v": 1})
    wait_until(lambda: len(seen) == 1, "the create")
    writer.update("functions", "hello", {"v": 2})
    wait_until(lambda: len(seen) == 2, "the update")
    writer.delete("functions", "hello")
    wait_until(lambda: len(seen) == 3, "the delete")
    assert summary(seen) == [
        ("created", "hello", 1, None),
        ("updated", "hello", 2, 1),
        ("deleted", "hello", 2, 2),
    ]
    assert seen[0].record == created
    assert seen[1].record.data == {"v": 2}
    assert follower.find("functions", "hello") is None


def test_a_burst_is_told_as_its_difference(pair: tuple[PostgresStore, PostgresStore]) -> None:
    writer, follower = pair
    seen: list[Change] = []
    follower.subscribe(seen.append)
    writer.create("functions", "kept", {"v": 1})
    wait_until(lambda: len(seen) == 1, "the first create")
    # Others' changes are re-read, not replayed: whatever happened between two reads of a
    # record arrives as the one difference, never as a state that is gone.
    for v in range(2, 12):
        writer.update("functions", "kept", {"v": v})
        writer.create("functions", f"brief{v}", {})
        writer.delete("functions", f"brief{v}")
    writer.create("functions", "last", {})
    # Subscribers are told just after the copy changes: wait for what they are told.
    wait_until(lambda: any(c.record.name == "last" for c in seen), "the last create")
    wait_until(
        lambda: any(c.record.name == "kept" and c.record.generation == 11 for c in seen),
        "the last update",
    )
    updates = [c.record.data["v"] for c in seen if c.record.name == "kept"][1:]
    assert updates == sorted(updates) and updates[-1] == 11
    for v in range(2, 12):
        # Seen at all only if read while it existed, and then its delete follows.
        assert [c.action for c in seen if c.record.name == f"brief{v}"] in (
            [],
            ["created", "deleted"],
        )
    assert [r.name for r in follower.list("functions")] == ["kept", "last"]


def test_own_writes_are_told_once(pair: tuple[PostgresStore, PostgresStore]) -> None:
    writer, follower = pair
    mine: list[Change] = []
    theirs: list[Change] = []
    writer.subscribe(mine.append)
    follower.subscribe(theirs.append)
    writer.create("functions", "a", {})
    writer.create("functions", "b", {})
    wait_until(lambda: len(theirs) == 2, "the follower to see both")
    # The writer's own notifications came back too by now (same channel, in commit order).
    follower.create("functions", "c", {})
    wait_until(lambda: len(mine) == 3, "c at the writer")
    assert [c.record.name for c in mine] == ["a", "b", "c"]


def test_the_copy_follows_other_writers(url: str, pair: tuple[PostgresStore, Any]) -> None:
    store, _ = pair
    with psycopg.connect(url, autocommit=True) as other:
        other.execute(
            "INSERT INTO resources VALUES ('functions', 'raw', '{\"x\": 1}', 4, now(), now())"
        )
    wait_until(lambda: store.find("functions", "raw") is not None, "the raw insert")
    assert store.get("functions", "raw").generation == 4
    assert store.get("functions", "raw").data == {"x": 1}
    # An update based on the copy sees the database's generation, not a stale one.
    assert store.update("functions", "raw", {"x": 2}, generation=4).generation == 5


def test_stale_write_between_nodes(pair: tuple[PostgresStore, PostgresStore]) -> None:
    first, second = pair
    first.create("functions", "f", {"v": 1})
    wait_until(lambda: second.find("functions", "f") is not None, "f at the second")
    first.update("functions", "f", {"v": 2}, generation=1)
    from fissile.store import StaleWrite

    with pytest.raises(StaleWrite, match="generation 2, expected 1"):
        second.update("functions", "f", {"v": 3}, generation=1)
    wait_until(lambda: second.get("functions", "f").generation == 2, "the second to catch up")


def test_a_dropped_listener_reconnects_and_resyncs(
    url: str, pair: tuple[PostgresStore, PostgresStore], caplog: pytest.LogCaptureFixture
) -> None:
    writer, follower = pair
    writer.create("functions", "kept", {})
    writer.create("functions", "gone", {})
    writer.create("functions", "again", {"v": 1})
    wait_until(lambda: len(follower.list("functions")) == 3, "the first three")
    seen: list[Change] = []
    follower.subscribe(seen.append)
    caplog.set_level(logging.WARNING, "fissile.store")
    pid = follower._listener.info.backend_pid
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    # Made while no one listens for the follower: only the resync can tell it.
    writer.update("functions", "kept", {"v": 2})
    writer.delete("functions", "gone")
    writer.create("functions", "new", {})
    writer.delete("functions", "again")
    writer.create("functions", "again", {"v": 2})
    wait_until(lambda: len(seen) >= 5, "the differences")
    # Made again while unseen: both halves, in order.
    again = [c for c in seen if c.record.name == "again"]
    assert [(c.action, c.record.data) for c in again] == [
        ("deleted", {"v": 1}),
        ("created", {"v": 2}),
    ]
    assert sorted(summary(seen)) == [
        ("created", "again", 1, None),
        ("created", "new", 1, None),
        ("deleted", "again", 1, 1),
        ("deleted", "gone", 1, 1),
        ("updated", "kept", 2, 1),
    ]
    assert "listening connection lost" in caplog.text
    # And it listens again.
    writer.create("functions", "after", {})
    wait_until(lambda: follower.find("functions", "after") is not None, "after the reconnect")


async def test_changes_from_elsewhere_run_on_the_loop(url: str) -> None:
    follower = open_store(url)
    writer = PostgresStore(url)
    try:
        threads: list[int] = []
        follower.subscribe(lambda change: threads.append(threading.get_ident()))
        writer.create("functions", "x", {})
        deadline = time.monotonic() + DEADLINE
        while not threads and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert threads == [threading.get_ident()]
    finally:
        writer.close()
        follower.close()


def test_unreachable_database() -> None:
    with pytest.raises(StoreError, match=r"cannot open the store at .*port=1"):
        PostgresStore("postgresql://postgres:secret@127.0.0.1:1/test?connect_timeout=5")


def test_a_schema_that_does_not_exist(url: str) -> None:
    with pytest.raises(StoreError, match="has no schema to use"):
        PostgresStore(url.replace("search_path%3D", "search_path%3Dmissing_"))


def test_password_is_not_in_messages() -> None:
    with pytest.raises(StoreError) as info:
        PostgresStore("postgresql://postgres:secret@127.0.0.1:1/test?connect_timeout=5")
    assert "secret" not in str(info.value)


def test_a_lost_connection_fails_one_write_then_recovers(url: str) -> None:
    store = PostgresStore(url)
    try:
        store.create("functions", "before", {})
        [(pid,)] = store._execute("SELECT pg_backend_pid()")
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreUnavailable, match="is unavailable"):
            store.create("functions", "lost", {})
        # Reads answer from the copy meanwhile.
        assert store.get("functions", "before").generation == 1
        wait_until(lambda: _tried(lambda: store.create("functions", "after", {})), "a write")
        assert [r.name for r in store.list("functions")] == ["after", "before"]
    finally:
        store.close()


def _tried(call: Callable[[], Any]) -> bool:
    try:
        call()
    except StoreUnavailable:
        return False
    return True


def test_nodes_starting_together_on_a_new_schema(url: str) -> None:
    # The schema is made under an advisory lock: without it, concurrent CREATE TABLE IF NOT
    # EXISTS and CREATE TRIGGER collide.
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: PostgresStore(url), range(4)))
    try:
        stores[0].create("functions", "f", {})
        for store in stores[1:]:
            wait_until(lambda s=store: s.find("functions", "f") is not None, "f everywhere")
    finally:
        for store in stores:
            store.close()


def test_a_write_from_another_process(url: str) -> None:
    store = PostgresStore(url)
    try:
        seen: list[Change] = []
        store.subscribe(seen.append)
        script = (
            "import sys\n"
            "from fissile.store import open_store\n"
            "s = open_store(sys.argv[1])\n"
            "s.create('functions', 'remote', {'by': 'another process'})\n"
            "s.close()\n"
        )
        subprocess.run([sys.executable, "-c", script, url], check=True, timeout=60)
        wait_until(lambda: len(seen) == 1, "the other process's create")
        assert seen[0].action == "created"
        assert seen[0].record.data == {"by": "another process"}
    finally:
        store.close()


def test_a_stray_notification_makes_a_full_re_read(url: str) -> None:
    store = PostgresStore(url)
    try:
        seen: list[Change] = []
        store.subscribe(seen.append)
        with psycopg.connect(url, autocommit=True) as other:
            # A write no trigger announces (replica mode skips triggers)...
            other.execute("SET session_replication_role = replica")
            other.execute(
                "INSERT INTO resources VALUES ('functions', 'quiet', '{}', 1, now(), now())"
            )
            # ...then a notification that is not the trigger's: the store re-reads it all.
            other.execute("SELECT pg_notify(%s, 'not json')", (store._channel,))
        wait_until(lambda: len(seen) == 1, "the re-read")
        assert (seen[0].action, seen[0].record.name) == ("created", "quiet")
        # The listening thread lives on.
        with psycopg.connect(url, autocommit=True) as other:
            other.execute(
                "INSERT INTO resources VALUES ('functions', 'loud', '{}', 1, now(), now())"
            )
        wait_until(lambda: store.find("functions", "loud") is not None, "the next change")
    finally:
        store.close()


def test_concurrent_updates_from_two_nodes_lose_nothing(
    pair: tuple[PostgresStore, PostgresStore],
) -> None:
    first, second = pair
    first.create("functions", "counter", {})
    with ThreadPoolExecutor(2) as pool:
        done = list(
            pool.map(
                lambda store: [store.update("functions", "counter", {}) for _ in range(40)],
                [first, second],
            )
        )
    generations = sorted(r.generation for batch in done for r in batch)
    # Every update read the generation it bumped under the row's lock: no two got the same.
    assert generations == list(range(2, 82))
    # Both copies end at the last one.
    wait_until(lambda: first.get("functions", "counter").generation == 81, "the last at first")
    wait_until(lambda: second.get("functions", "counter").generation == 81, "the last at second")
