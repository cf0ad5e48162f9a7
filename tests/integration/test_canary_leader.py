"""The cluster's canary controller on a real PostgreSQL (a fresh schema per test), two nodes in
one process (each its own store copy, counters and connection): one leads, it decides on the
other's counts, another takes over when the leader goes, and two controllers that both run
never take one step twice."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
import pytest
from pgkit import fresh_schema

from fissile.cluster import canary_leader
from fissile.cluster.canary_leader import CanaryLeader
from fissile.controlplane.canaries import Canaries, check
from fissile.models import CanarySpec
from fissile.observability.metrics import Metrics
from fissile.store import Store, open_store


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts written and the lock tried four times a second (one in production): the
    intervals below can then be short."""
    monkeypatch.setattr(canary_leader, "TICK", 0.25)


class Node:
    def __init__(self, url: str, name: str) -> None:
        self.name = name
        self.store = open_store(url)
        self.metrics = Metrics()
        self.leader = CanaryLeader(url, name, self.metrics)
        self.canaries = Canaries(self.store, self.metrics, counts=self.leader, leading=False)

    async def start(self) -> None:
        self.canaries.start()
        await self.leader.start(self.canaries)

    async def stop(self) -> None:
        await self.leader.stop()
        await self.canaries.stop()
        self.store.close()

    def serve(self, status: int, count: int = 1) -> None:
        for _ in range(count):
            self.metrics.function("new").request(status, 0.001)


@contextmanager
def database() -> Iterator[str]:
    with fresh_schema() as url:
        store = open_store(url)
        for function in ("old", "new"):
            store.create("functions", function, {"name": function})
        store.create("httptriggers", "t", {"name": "t", "function": "old", "url": "/t"})
        store.close()
        yield url


@asynccontextmanager
async def nodes(url: str, *names: str) -> AsyncIterator[list[Node]]:
    started: list[Node] = []
    try:
        for name in names:
            node = Node(url, name)
            started.append(node)
            await node.start()
        yield started
    finally:
        for node in started:
            await node.stop()


def create(store: Store, **fields: Any) -> None:
    spec = CanarySpec.model_validate(
        {
            "name": "c",
            "httptrigger": "t",
            "newfunction": "new",
            "oldfunction": "old",
            "increment_step": 50,
            "increment_interval": 1.5,
            **fields,
        }
    )
    data = {**spec.model_dump(mode="json"), "status": check(store, spec).model_dump(mode="json")}
    store.create("canaries", "c", data)


def status(store: Store) -> dict[str, Any]:
    record = store.find("canaries", "c")
    assert record is not None
    found: dict[str, Any] = record.data["status"]
    return found


async def until(condition: Callable[[], bool], what: str, serve: Callable[[], None]) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        serve()
        await asyncio.sleep(0.02)


def leaders(running: list[Node]) -> list[Node]:
    return [node for node in running if node.leader.leading]


async def test_one_node_leads_and_decides_on_the_others_counts() -> None:
    with database() as url:
        async with nodes(url, "a", "b") as running:
            await until(lambda: len(leaders(running)) == 1, "a leader", lambda: None)
            await asyncio.sleep(2.5)  # more than two tries at the lock: still one leader
            (leader,) = leaders(running)
            other = next(node for node in running if node is not leader)
            assert not other.canaries._tasks

            create(leader.store, failure_threshold=10)
            # Every request is served by the node that does not lead: only the cluster's
            # counts can tell the leader about them.
            await until(
                lambda: status(leader.store)["state"] != "pending",
                "the rollback",
                lambda: other.serve(503),
            )
            final = status(leader.store)
            assert (final["state"], final["weight"], final["error_rate"]) == ("failed", 0, 100.0)
            assert final["requests"] > 0
            assert not other.canaries._tasks  # it never ran the canary

            # Rows of the functions no pending canary moves are forgotten.
            def counted() -> int:
                with psycopg.connect(url, autocommit=True) as conn:
                    row = conn.execute("SELECT count(*) FROM fissile_canary_counts").fetchone()
                return int(row[0]) if row else -1

            await until(lambda: counted() == 0, "the rows forgotten", lambda: None)


async def test_counts_of_both_nodes_are_summed() -> None:
    with database() as url:
        async with nodes(url, "a", "b") as running:
            await until(lambda: len(leaders(running)) == 1, "a leader", lambda: None)
            (leader,) = leaders(running)
            other = next(node for node in running if node is not leader)
            # The leader's own router answers well, the other's fails one in three: 1/6 of
            # the cluster's answers fail, over the threshold of 5 %, and neither node's own
            # rate (0 % and 33 %).
            create(leader.store, failure_threshold=5, increment_step=50, increment_interval=3)

            def serve() -> None:
                leader.serve(200, 3)
                other.serve(200, 2)
                other.serve(500)

            await until(lambda: status(leader.store)["state"] != "pending", "a decision", serve)
            final = status(leader.store)
            assert final["state"] == "failed", final
            # Counts reach the table once a second on each node, a little apart: about 1/6.
            assert 5.0 < final["error_rate"] < 30.0, final


async def test_another_node_takes_over_when_the_leader_goes() -> None:
    with database() as url:
        async with nodes(url, "a", "b", "c") as running:
            await until(lambda: len(leaders(running)) == 1, "a leader", lambda: None)
            (first,) = leaders(running)
            create(first.store, increment_step=25)

            def serve_all() -> None:
                for node in running:
                    node.serve(200)

            await until(lambda: status(first.store)["weight"] == 25, "the first step", serve_all)
            # Its connection dies (the database ends its session): the lock goes with it.
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND granted AND pid != pg_backend_pid()"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                    " AND objid = (('x' || left(md5('fissile-canary-leader:'"
                    " || current_schema()), 16))::bit(64)::bigint & 4294967295)::oid"
                )
            await until(lambda: not first.leader.leading, "the lead lost", serve_all)
            # Then the leader stops for good: another node finishes the canary.
            await first.stop()
            running.remove(first)
            await until(lambda: len(leaders(running)) == 1, "a new leader", serve_all)
            (second,) = leaders(running)
            await until(lambda: status(second.store)["state"] != "pending", "the end", serve_all)
            assert status(second.store)["state"] == "succeeded"
            record = second.store.find("httptriggers", "t")
            assert record is not None
            assert record.data["function_weights"] == {"old": 0, "new": 100}
            running.append(first)  # stopped already: stopping again is harmless


async def test_two_controllers_running_at_once_never_step_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The moment two nodes both believe they lead (a leader that has not yet seen its lock
    go): every step is written on the generation it was decided from."""
    caplog.set_level(logging.INFO, logger="fissile.canary")
    with database() as url:
        async with nodes(url, "a", "b") as running:
            await until(lambda: len(leaders(running)) == 1, "a leader", lambda: None)
            for node in running:
                await node.canaries.follow()
            create(running[0].store, increment_step=20, increment_interval=0.5)
            await until(
                lambda: all(node.store.find("canaries", "c") for node in running),
                "the canary in both copies",
                lambda: None,
            )
            for node in running:
                node.canaries.lead()  # both run it, whatever the lock says
            await until(
                lambda: all("c" in node.canaries._tasks for node in running),
                "both controllers running it",
                lambda: None,
            )

            def serve_all() -> None:
                for node in running:
                    node.serve(200)

            await until(
                lambda: all(status(node.store)["state"] == "succeeded" for node in running),
                "the end",
                serve_all,
            )
            # Each weight was reached once, in order (an interval without a count in it
            # keeps the weight: "stays at").
            steps = re.findall(r"canary c: new at (\d+)%", caplog.text)
            assert steps == [str(w) for w in range(20, 100, 20)], caplog.text
            assert caplog.text.count("canary c succeeded") == 1, caplog.text
            # One decision per interval: a second controller stepping right after the first
            # would put two within moments of each other (a loaded machine can delay the log
            # line of one step by its writes, hence half an interval).
            decided = [
                record.created
                for record in caplog.records
                if record.getMessage().startswith(("canary c: new", "canary c succeeded"))
            ]
            gaps = [later - earlier for earlier, later in itertools.pairwise(decided)]
            assert min(gaps) > 0.5 / 2, (gaps, caplog.text)
