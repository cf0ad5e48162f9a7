"""Async invocations and timer slots shared in PostgreSQL (fissile/invocations/pgstore.py,
fissile/triggers/claims.py): the record's protocol on both stores (the same bodies), then
what only a shared store does: leases, claims, give-backs, a dead node's invocations run by
another, watchers on a node that does not run the invocation, and slots fired once.

Each PostgreSQL test uses a fresh schema (tests/pgkit.py); without a server they skip, except
under CI=true.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from intkit import Harness, until
from pgkit import fresh_schema

from fissile.invocations import Invocations, InvocationStore, Status
from fissile.invocations.pgstore import PostgresInvocationStore
from fissile.invocations.records import Invocation, Response
from fissile.store import Change, Record
from fissile.triggers.claims import SharedClaims
from fissile.triggers.timer import TimerState
from fissile.triggers.watch import change_id

Store = InvocationStore | PostgresInvocationStore


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = InvocationStore(tmp_path / "invocations.db", tmp_path / "bodies")
        yield opened
        opened.close()
        return
    with fresh_schema() as url:
        opened = PostgresInvocationStore(url, "n1")
        yield opened
        opened.close()


def make(invocation_id: str, function: str = "f", created: float | None = None) -> Invocation:
    now = time.time() if created is None else created
    return Invocation(
        id=invocation_id,
        function=function,
        status=Status.queued,
        method="POST",
        target="/async-function/f?x=1",
        headers=[("content-type", "text/plain"), ("x-mine", "1")],
        max_attempts=3,
        created_at=now,
        next_attempt_at=now,
    )


# -- the protocol, on both stores ----------------------------------------------------------


def test_round_trip_and_results(store: Store) -> None:
    store.add(make("a"), b"payload")
    found = store.get("a")
    assert found is not None
    assert found.status is Status.queued
    assert found.headers == [("content-type", "text/plain"), ("x-mine", "1")]
    assert store.request_body("a") == b"payload"
    assert store.get("missing") is None

    big = bytes(range(256)) * 1024  # binary, above SQLite's inline limit
    invocation = make("a")
    invocation.status, invocation.attempts = Status.running, 1
    invocation.started_at = time.time()
    store.started(invocation)
    assert store.get("a").status is Status.running  # type: ignore[union-attr]
    invocation.status, invocation.finished_at = Status.succeeded, time.time()
    invocation.response = Response(200, [("content-type", "application/octet-stream")], big)
    store.finished(invocation)
    found = store.get("a")
    assert found is not None and found.response is not None
    assert found.status is Status.succeeded and found.response.body == big
    assert store.request_body("a") == b""  # dropped once finished
    assert store.counts() == {"succeeded": 1}
    assert store.census() == {("f", "succeeded"): 1}


def test_expire_keeps_unfinished_recent_and_pending_callbacks(store: Store) -> None:
    old = time.time() - 100
    for name in ("done", "queued", "callback"):
        store.add(make(name, created=old), b"")
    done = make("done")
    done.status, done.finished_at = Status.failed, old
    store.finished(done)
    callback = make("callback")
    callback.status, callback.finished_at = Status.succeeded, old
    callback.callback_url, callback.callback_state = "http://127.0.0.1:1/", "pending"
    store.finished(callback)
    assert store.expire(time.time() - 10) == 1
    assert store.get("done") is None
    assert store.get("queued") is not None
    assert [i.id for i in store.pending_callbacks()] == ["callback"]


def test_unfinished_oldest_first_and_list_filters(store: Store) -> None:
    base = time.time()
    for index, name in enumerate(["c", "a", "b"]):
        store.add(make(name, function="g" if name == "b" else "f", created=base + index), b"")
    assert [i.id for i in store.unfinished()] == ["c", "a", "b"]
    assert [i.id for i in store.list(limit=2)] == ["b", "a"]
    assert [i.id for i in store.list(function="g")] == ["b"]
    assert [i.id for i in store.list(status="succeeded")] == []


# -- ownership: only a shared store --------------------------------------------------------


def test_a_lease_keeps_others_off_until_it_runs_out(pg_url: str) -> None:
    one = PostgresInvocationStore(pg_url, "one", lease=0.5)
    two = PostgresInvocationStore(pg_url, "two", lease=0.5)
    try:
        one.add(make("x"), b"body")
        assert one.get("x").node == "one"  # type: ignore[union-attr]
        assert two.claim(10) == []  # held by its accepting node
        one.renew()
        deadline = time.monotonic() + 10
        while not (claimed := two.claim(10)):
            assert time.monotonic() < deadline, "the lease never ran out"
            time.sleep(0.05)
        assert [i.id for i in claimed] == ["x"]
        assert claimed[0].node == "two"
        assert one.claim(10) == []  # now held by two
        two.release()
        assert [i.id for i in one.claim(10)] == ["x"]  # given back: claimable at once
    finally:
        one.close()
        two.close()


def test_concurrent_claims_never_share_an_invocation(pg_url: str) -> None:
    stores = [PostgresInvocationStore(pg_url, f"n{i}", lease=60) for i in range(4)]
    try:
        base = time.time()
        for index in range(200):
            stores[0].add(make(f"i{index:03}", created=base - 300 + index), b"")
        stores[0].release()
        claimed: dict[str, list[str]] = {}

        def claim(store: PostgresInvocationStore) -> None:
            mine = claimed.setdefault(store.node, [])
            while batch := store.claim(7):
                mine.extend(i.id for i in batch)

        threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        everything = [i for ids in claimed.values() for i in ids]
        assert sorted(everything) == [f"i{index:03}" for index in range(200)]
        assert len(set(everything)) == 200
    finally:
        for store in stores:
            store.close()


def test_a_cancel_through_another_node_wins_over_the_attempt(pg_url: str) -> None:
    one = PostgresInvocationStore(pg_url, "one")
    two = PostgresInvocationStore(pg_url, "two")
    try:
        invocation = make("x")
        one.add(invocation, b"")
        cancelled = two.get("x")
        assert cancelled is not None
        cancelled.status, cancelled.finished_at = Status.cancelled, time.time()
        two.finished(cancelled)
        invocation.status, invocation.finished_at = Status.succeeded, time.time()
        invocation.response = Response(200, [], b"late")
        one.finished(invocation)
        assert one.get("x").status is Status.cancelled  # type: ignore[union-attr]
        # What the running node polls for to stop its attempt.
        one.add(make("y"), b"")
        assert one.cancelled(["x", "y", "missing"]) == ["x"]
    finally:
        one.close()
        two.close()


# -- the service: a dead node's invocations, watchers elsewhere ----------------------------

WORK = """
def main(request):
    return {"body": request.text}
"""


async def test_a_dead_nodes_invocations_run_on_another_and_watchers_see_them(
    harness: Harness, pg_url: str
) -> None:
    harness.function("work", WORK)
    # The accepting node: it records invocations, and one was running when it died, then
    # it never renews again.
    dead = PostgresInvocationStore(pg_url, "dead", lease=0.5)
    for index in range(5):
        dead.add(make(f"q{index}", function="work"), f"body {index}".encode())
    running = make("r", function="work")
    dead.add(running, b"running")
    running.status, running.attempts, running.started_at = Status.running, 1, time.time()
    dead.started(running)
    dead.close()

    alive = Invocations(PostgresInvocationStore(pg_url, "alive", lease=0.5), harness.executor)
    watcher = Invocations(PostgresInvocationStore(pg_url, "watcher", lease=0.5), harness.executor)
    watcher.max_running = 0  # it only watches: nothing is ever claimed there
    await alive.start()
    await watcher.start()
    try:
        queue = watcher.watch("q0")
        ids = [f"q{index}" for index in range(5)] + ["r"]

        def done() -> bool:
            return all((alive.get(i) or make(i)).final for i in ids)

        await until(done, timeout=30)
        for invocation_id in ids:
            found = alive.get(invocation_id)
            assert found is not None and found.status is Status.succeeded, found
            assert found.node == "alive"
            assert found.attempts == 1  # the interrupted attempt does not count
        found = alive.get("r")
        assert found is not None and found.response is not None
        assert b"running" in found.response.body
        documents: list[dict[str, Any]] = []
        while not documents or documents[-1]["status"] != "succeeded":
            documents.append(await asyncio.wait_for(queue.get(), 10))
        assert documents[-1]["node"] == "alive"
    finally:
        await alive.stop(grace=0.5)
        await watcher.stop(grace=0.5)
        alive.store.close()
        watcher.store.close()


async def test_a_submitted_invocation_runs_on_its_node_and_is_given_back_at_stop(
    harness: Harness, pg_url: str
) -> None:
    harness.function("work", WORK)
    one = Invocations(PostgresInvocationStore(pg_url, "one"), harness.executor)
    await one.start()
    try:
        invocation = one.submit("work", "POST", "/", [], b"hello")
        await until(lambda: (one.get(invocation.id) or invocation).final, timeout=20)
        found = one.get(invocation.id)
        assert found is not None and found.status is Status.succeeded and found.node == "one"
        # Stopped with work queued for later: it is given back, not held for a lease.
        later = make("later", function="work", created=time.time())
        later.next_attempt_at = time.time() + 3600
        one.store.add(later, b"")
    finally:
        await one.stop(grace=0.5)
    two = PostgresInvocationStore(pg_url, "two")
    try:
        row = two.get("later")
        assert row is not None and row.status is Status.queued and row.node is None
        assert two.states(["later"]) == {"later": ("queued", 0)}
    finally:
        two.close()
        one.store.close()


# -- timer slots ---------------------------------------------------------------------------


def test_a_slot_is_claimed_once_across_nodes(pg_url: str) -> None:
    nodes = [SharedClaims(pg_url, f"n{i}") for i in range(3)]
    try:
        slot = datetime(2026, 1, 1, tzinfo=UTC)
        assert nodes[0].last_fired("t") is None
        results: list[bool] = []
        threads = [
            threading.Thread(target=lambda n=n: results.append(n.record("t", slot))) for n in nodes
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(results) == [False, False, True]
        assert nodes[1].last_fired("t") == slot
        assert nodes[2].record("t", slot + timedelta(seconds=1))
        assert nodes[0].last_fired("t") == slot + timedelta(seconds=1)
        assert nodes[0].record("other", slot)  # per timer
        nodes[1].forget("t")
        assert nodes[2].last_fired("t") is None
    finally:
        for node in nodes:
            node.close()


def test_the_single_node_state_always_fires(tmp_path: Path) -> None:
    state = TimerState(tmp_path / "triggers.db")
    slot = datetime(2026, 1, 1, tzinfo=UTC)
    assert state.record("t", slot) and state.record("t", slot)
    state.close()


def test_a_watch_delivery_is_claimed_once_across_nodes(pg_url: str) -> None:
    nodes = [SharedClaims(pg_url, f"n{i}") for i in range(3)]
    try:
        assert [n.claim_delivery("w", "e1") for n in nodes] == [True, False, False]
        assert nodes[1].claim_delivery("other", "e1")  # per watch
        assert nodes[2].claim_delivery("w", "e2")
    finally:
        for node in nodes:
            node.close()


def test_a_change_has_one_event_id_on_every_node() -> None:
    made = datetime(2026, 1, 1, tzinfo=UTC)
    record = Record("functions", "f", {"env": "python"}, 2, made, made + timedelta(seconds=1))
    # Another node's copy of the same change: equal, not the same object.
    again = Record("functions", "f", {"env": "python"}, 2, made, made + timedelta(seconds=2))
    assert change_id(Change("updated", record)) == change_id(Change("updated", again))
    remade = Record("functions", "f", {}, 2, made + timedelta(seconds=5), made)
    others = {
        change_id(Change("deleted", record)),
        change_id(Change("updated", remade)),
        change_id(Change("updated", Record("functions", "f", {}, 3, made, made))),
    }
    assert len(others | {change_id(Change("updated", record))}) == 4


SLOW = """
import time

def main(request):
    time.sleep(0.2)
    return "done"
"""


async def test_work_beyond_a_nodes_room_is_left_to_nodes_with_room(
    harness: Harness, pg_url: str
) -> None:
    # Each node may run two at a time: what the accepting node cannot start now stays free,
    # and the other node claims it (both nodes share one executor here, with room for both).
    harness.function("slow", SLOW, max_scale=2, concurrency=1)
    one = Invocations(PostgresInvocationStore(pg_url, "one"), harness.executor)
    two = Invocations(PostgresInvocationStore(pg_url, "two"), harness.executor)
    one.max_running = two.max_running = 1
    await one.start()
    await two.start()
    try:
        ids = [one.submit("slow", "POST", "/", [], b"").id for _ in range(8)]
        first = one.get(ids[0])
        assert first is not None and first.node == "one"  # room here: held at once
        assert one.get(ids[-1]).node is None  # type: ignore[union-attr]

        def done() -> bool:
            return all((one.get(i) or make(i)).final for i in ids)

        await until(done, timeout=60)
        found = [one.get(i) for i in ids]
        assert {f.status for f in found if f is not None} == {Status.succeeded}
        assert {f.node for f in found if f is not None} == {"one", "two"}
    finally:
        await one.stop(grace=0.5)
        await two.stop(grace=0.5)
        one.store.close()
        two.store.close()
