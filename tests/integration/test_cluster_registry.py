"""The cluster's registry on a real PostgreSQL (a fresh schema per test): nodes' rows and
heartbeats, drains, cluster-wide instance claims, and builds fetched by sha256."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from types import SimpleNamespace

import httpx
import psycopg
import pytest
from pgkit import fresh_schema

from fissile.cluster.artifacts import ArtifactError, Artifacts, pack
from fissile.cluster.nodes import _TABLE, NodeAlive, NodeNotFound, Nodes


def one_slot_pool(busy: list[int], starting: int, claiming: int = 0) -> SimpleNamespace:
    """A function's pool as a node's heartbeat reads it: ready instances of one slot each
    (``busy``: each one's requests in flight), instances starting, nothing queued."""
    return SimpleNamespace(
        instances=[SimpleNamespace(inflight=n) for n in busy],
        starting=starting,
        claiming=claiming,
        limit=1,
        waiters=[],
        inflight=sum(busy),
    )


def serving_node(url: str, pool: SimpleNamespace) -> Nodes:
    """Node "a", whose executor holds ``pool`` as function "f"."""
    executor = SimpleNamespace(functions={"f": pool})
    return Nodes(url, "a", "127.0.0.1:1", executor)  # type: ignore[arg-type]


async def test_nodes_join_beat_drain_and_die() -> None:
    with fresh_schema() as url:
        a = Nodes(url, "a", "127.0.0.1:1", None)
        b = Nodes(url, "b", "127.0.0.1:2", None)
        await a.start()
        await b.start()
        try:
            await a._beat()
            assert [peer.name for peer in a.peers] == ["b"]
            assert a.peers[0].serving and a.peers[0].address == "127.0.0.1:2"
            drained = await a.set_state("b", "draining")
            assert drained.status == "draining"
            await b._beat()
            assert b.draining  # the drained node learns it at its heartbeat
            with pytest.raises(NodeNotFound):
                await a.set_state("nobody", "draining")
            # A node whose heartbeat is old is dead to the others.
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "UPDATE fissile_nodes SET heartbeat_at = now() - interval '10 seconds'"
                    " WHERE name = 'b'"
                )
            listed = {node.name: node for node in await a.list()}
            assert listed["b"].status == "dead" and not listed["b"].alive
        finally:
            await a.stop()
            await b.stop()
        assert {node.status for node in await Nodes(url, "c", "x:1", None).list()} == {"stopped"}


async def test_claims_hold_the_bound_across_nodes() -> None:
    with fresh_schema() as url:
        a = Nodes(url, "a", "127.0.0.1:1", None)
        b = Nodes(url, "b", "127.0.0.1:2", None)
        await a.start()
        await b.start()
        try:
            assert [await a.claim("f", n, 4) for n in (1, 2, 3)] == [True, True, True]
            assert await b.claim("f", 1, 4)
            assert not await b.claim("f", 2, 4)  # a holds 3, b 1: the bound is reached
            assert b.elsewhere("f") == 3  # what the refusal told, before any heartbeat
            assert await b.claim("g", 1, 4)  # another function has its own bound
            # A dead node's instances stop counting.
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "UPDATE fissile_nodes SET heartbeat_at = now() - interval '10 seconds'"
                    " WHERE name = 'a'"
                )
            assert await b.claim("f", 2, 4)
        finally:
            await a.stop()
            await b.stop()


async def test_heartbeats_publish_free_slots_also_on_an_older_table() -> None:
    with fresh_schema() as url:
        older = _TABLE.replace(",\n    idle JSONB NOT NULL DEFAULT '{}'", "")
        assert "idle" not in older
        with psycopg.connect(url, autocommit=True) as conn:  # as an older fissile made it
            conn.execute(older)
            conn.execute(
                "INSERT INTO fissile_nodes (name, address, version, state, started_at,"
                " heartbeat_at) VALUES ('old', 'x:1', '0.0.1', 'active', now(), now())"
            )
        # f: two ready instances of one slot each (one busy), one starting, nothing queued.
        pool = one_slot_pool([1, 0], starting=1)
        a, b = serving_node(url, pool), Nodes(url, "b", "127.0.0.1:2", None)
        await a.start()
        await b.start()
        try:
            await b._beat()
            seen = {peer.name: peer for peer in b.peers}
            assert seen["a"].functions == {"f": 3} and seen["a"].idle == {"f": 2}
            assert seen["old"].idle == {}  # a node that does not write it: no free slot known
            assert b.viewed_at > 0
            pool.waiters = [object()] * 2  # both free slots spoken for
            await a._beat()
            await b._beat()
            assert {peer.name: peer.idle for peer in b.peers}["a"] == {}
        finally:
            await a.stop()
            await b.stop()


async def test_a_heartbeat_leaves_out_the_starts_still_waiting_for_their_claim() -> None:
    # The row must never hold more than the claims granted: a start counted before its claim
    # is answered (and perhaps refused) showed the cluster above max_scale in CI.
    with fresh_schema() as url:
        # f: two ready instances, two starting: one claimed, one waiting for its claim.
        pool = one_slot_pool([0, 0], starting=2, claiming=1)
        a, b = serving_node(url, pool), Nodes(url, "b", "127.0.0.1:2", None)
        await a.start()
        await b.start()
        try:
            assert await b.claim("f", 1, 4)
            await a._beat()
            await b._beat()
            seen = {peer.name: peer for peer in b.peers}
            assert seen["a"].functions == {"f": 3}  # 2 ready + 1 claimed start
            assert seen["a"].idle == {"f": 3}  # the unclaimed start's slot is not offered
            assert not await b.claim("f", 2, 4)  # 3 + 2 > 4
            pool.claiming = 0  # granted
            await a._beat()
            assert not await b.claim("f", 2, 4)
            assert b.elsewhere("f") == 4
        finally:
            await a.stop()
            await b.stop()


async def test_the_api_and_the_heartbeat_take_turns_on_the_connection() -> None:
    # CI saw `fissile node forget` fail with "the connection is closed": its transaction and a
    # heartbeat's interleaved on the one connection, psycopg refused the heartbeat's, and the
    # failed heartbeat closed the connection under the forget.
    with fresh_schema() as url:
        a = Nodes(url, "a", "127.0.0.1:1", None)
        b = Nodes(url, "b", "127.0.0.1:2", None)
        await a.start()
        await b.start()
        try:
            for _ in range(20):
                outcomes = await asyncio.gather(
                    a.forget("b"),
                    a._beat(),
                    a.set_state("b", "draining"),
                    a._beat(),
                    a.list(),
                    return_exceptions=True,
                )
                assert isinstance(outcomes[0], NodeAlive), outcomes
                assert [o for o in outcomes[1:] if isinstance(o, BaseException)] == []
            await b.stop()
            await asyncio.gather(a.forget("b"), a._beat())
            assert [node.name for node in await a.list()] == ["a"]
        finally:
            await a.stop()
            await b.stop()


async def test_a_build_is_fetched_and_checked_by_sha256(tmp_path: Path) -> None:
    build = tmp_path / "one" / "deploy" / "k1"
    build.mkdir(parents=True)
    (build / "handler.py").write_text("def main():\n    return 'hi'\n")
    archive = tmp_path / "k1.tar"
    digest, size = pack(build, archive)
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == digest and size > 0
    served = {"body": archive.read_bytes()}

    def peer(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer t0ken"
        assert request.url.path == f"/_fissile/cluster/artifacts/{digest}"
        return httpx.Response(200, content=served["body"])

    with fresh_schema() as url:
        holder = Nodes(url, "one", "127.0.0.1:1", None)
        await holder.start()
        deploy = tmp_path / "two" / "deploy"
        deploy.mkdir(parents=True)
        fetcher = Artifacts(url, "two", tmp_path / "two" / "artifacts", deploy, "t0ken", 10)
        fetcher.transport = httpx.MockTransport(peer)
        await fetcher.start()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO fissile_artifacts (key, node, sha256, size) VALUES (%s, %s, %s, %s)",
                ("k1", "one", digest, size),
            )
        try:
            # A peer serving other bytes than the store's sha256 names is not believed.
            served["body"] = served["body"][:-1] + b"x"
            with pytest.raises(ArtifactError, match="sha256 mismatch"):
                await fetcher._download("k1", digest, "127.0.0.1:1")
            assert not (deploy / "k1").exists()

            served["body"] = archive.read_bytes()
            await fetcher.ensure(str(deploy / "k1"))
            assert (deploy / "k1" / "handler.py").read_text().startswith("def main")
            assert fetcher.fetched == 1
            assert (tmp_path / "two" / "artifacts" / f"{digest}.tar").is_file()
        finally:
            await fetcher.aclose()
            await holder.stop()
