"""Drains that outlive a node's restart, and forgetting a retired node's row, on a real
PostgreSQL (a fresh schema per test)."""

from __future__ import annotations

import psycopg
import pytest
from pgkit import fresh_schema

from fissile.cluster.nodes import NodeAlive, NodeNotFound, Nodes


def _age(url: str, name: str) -> None:
    """Make ``name``'s last heartbeat old: the node is dead to the others."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE fissile_nodes SET heartbeat_at = now() - interval '10 seconds' WHERE name = %s",
            (name,),
        )


async def test_a_drained_node_restarts_drained_until_resumed() -> None:
    with fresh_schema() as url:
        a = Nodes(url, "a", "127.0.0.1:1", None)
        b = Nodes(url, "b", "127.0.0.1:2", None)
        await a.start()
        await b.start()
        try:
            await a.set_state("b", "draining")
            await b._beat()
            assert b.draining
            await b.stop()  # a clean stop: the row says stopped, the drain stays
            listed = {node.name: node for node in await a.list()}
            assert listed["b"].status == "stopped" and listed["b"].drained
            b = Nodes(url, "b", "127.0.0.1:3", None)
            await b.start()
            assert b.draining  # from its first heartbeat, before it serves anything
            await a._beat()
            assert a.peers[0].status == "draining" and not a.peers[0].serving
            # A crash (no clean stop) keeps it too.
            _age(url, "b")
            b2 = Nodes(url, "b", "127.0.0.1:4", None)
            await b2.start()
            assert b2.draining
            await a.set_state("b", "active")
            await b2._beat()
            assert not b2.draining
            await b2.stop()
            b3 = Nodes(url, "b", "127.0.0.1:4", None)
            await b3.start()
            assert not b3.draining  # resumed: back at work after a restart
            await b3.stop()
        finally:
            await a.stop()
            await b.stop()


async def test_a_stopped_node_can_be_drained_or_resumed_before_it_starts() -> None:
    with fresh_schema() as url:
        a = Nodes(url, "a", "127.0.0.1:1", None)
        b = Nodes(url, "b", "127.0.0.1:2", None)
        await a.start()
        await b.start()
        await b.stop()
        try:
            drained = await a.set_state("b", "draining")
            assert drained.status == "stopped" and drained.drained
            assert drained.as_json()["drained"] is True
            b = Nodes(url, "b", "127.0.0.1:2", None)
            await b.start()
            assert b.draining
            await b.stop()
            resumed = await a.set_state("b", "active")
            assert resumed.status == "stopped" and not resumed.drained
            b = Nodes(url, "b", "127.0.0.1:2", None)
            await b.start()
            assert not b.draining
        finally:
            await a.stop()
            await b.stop()


async def test_forget_deletes_a_stopped_or_dead_node_and_refuses_a_live_one() -> None:
    with fresh_schema() as url:
        a = Nodes(url, "a", "127.0.0.1:1", None)
        b = Nodes(url, "b", "127.0.0.1:2", None)
        c = Nodes(url, "c", "127.0.0.1:3", None)
        for node in (a, b, c):
            await node.start()
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "CREATE TABLE fissile_artifacts (key TEXT, node TEXT, sha256 TEXT, size BIGINT)"
                )
                conn.execute("INSERT INTO fissile_artifacts VALUES ('k', 'b', 's', 1)")
            with pytest.raises(NodeAlive):
                await a.forget("b")
            with pytest.raises(NodeAlive):
                await a.forget("a")  # itself
            with pytest.raises(NodeNotFound):
                await a.forget("nobody")
            await b.stop()
            await a.forget("b")
            _age(url, "c")  # dead: gone without a clean stop
            await a.forget("c")
            assert [node.name for node in await a.list()] == ["a"]
            with psycopg.connect(url, autocommit=True) as conn:
                rows = conn.execute("SELECT count(*) FROM fissile_artifacts").fetchone()
            assert rows == (0,)  # the builds it held are not offered any more
        finally:
            for node in (a, b, c):
                await node.stop()


async def test_a_table_from_before_drains_persisted_gets_the_column() -> None:
    with fresh_schema() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE fissile_nodes (name TEXT PRIMARY KEY, address TEXT NOT NULL,"
                " version TEXT NOT NULL, state TEXT NOT NULL, started_at TIMESTAMPTZ NOT NULL,"
                " heartbeat_at TIMESTAMPTZ NOT NULL, instances INTEGER NOT NULL DEFAULT 0,"
                " inflight INTEGER NOT NULL DEFAULT 0, memory_free BIGINT NOT NULL DEFAULT 0,"
                " functions JSONB NOT NULL DEFAULT '{}')"
            )
            conn.execute(
                "INSERT INTO fissile_nodes VALUES ('old', 'x:1', '0', 'draining', now(), now())"
            )
        a = Nodes(url, "a", "127.0.0.1:1", None)
        await a.start()
        try:
            listed = {node.name: node for node in await a.list()}
            assert listed["old"].status == "draining" and listed["old"].drained
            assert not listed["a"].drained
            await a.set_state("old", "active")
            assert not {node.name: node for node in await a.list()}["old"].drained
        finally:
            await a.stop()
