"""Which requests a cluster node's router forwards, and to whom (``cluster/peers.py``)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from fissile.cluster.nodes import NodeInfo, Nodes
from fissile.cluster.peers import HOP, Peers

MiB = 1024**2


def node(name: str, **fields: Any) -> NodeInfo:
    now = datetime.now(UTC)
    defaults: dict[str, Any] = {
        "address": f"{name}:8080",
        "version": "0.1.0",
        "state": "active",
        "started_at": now,
        "heartbeat_at": now,
        "age": 0.5,
    }
    return NodeInfo(name=name, **{**defaults, **fields})


def pool(name: str = "f", instances: int = 0, max_scale: int = 4, memory: int = 256 * MiB) -> Any:
    spec = SimpleNamespace(max_scale=max_scale, memory=memory)
    return SimpleNamespace(name=name, instances=[object()] * instances, starting=0, spec=spec)


@pytest.fixture
def peers() -> Peers:
    nodes = Nodes("postgresql://unused", "me", "me:8080", None)
    nodes.memory_free = 8192 * MiB
    return Peers(nodes, "token", None, 30.0)  # type: ignore[arg-type]


def test_a_node_with_room_serves_locally(peers: Peers) -> None:
    peers.nodes.peers = [node("a"), node("b")]
    assert not peers.forwarding([], pool())
    assert not peers.forwarding([], None)
    assert not peers.forwarding([], pool(instances=1))


def test_a_drained_node_forwards_everything_once(peers: Peers) -> None:
    peers.nodes.draining = True
    peers.nodes.peers = [node("a", inflight=3), node("b", inflight=1), node("c", state="draining")]
    assert peers.forwarding([], pool(instances=2))
    assert peers.target().name == "b"  # type: ignore[union-attr]
    assert not peers.forwarding([(HOP, b"a")], pool())  # never a second hop
    peers.nodes.peers = [node("a", age=10.0)]  # dead: nowhere to go, served here
    assert not peers.forwarding([], pool())


def test_at_max_scale_elsewhere_requests_go_to_a_holder(peers: Peers) -> None:
    peers.nodes.peers = [
        node("a", functions={"f": 3}),
        node("b", functions={"f": 1}, inflight=5),
        node("c", inflight=0),
    ]
    assert peers.forwarding([], pool(max_scale=4))
    # Holders first, even busier than an idle node without the function.
    assert {peers.target("f").name for _ in range(4)} <= {"a", "b"}  # type: ignore[union-attr]
    assert peers.target("f").name == "a"  # type: ignore[union-attr]
    assert not peers.forwarding([], pool(max_scale=5))  # one slot left: start it here
    assert not peers.forwarding([], pool(max_scale=4, instances=1))  # it has one


def test_short_of_memory_a_cold_start_goes_where_there_is_room(peers: Peers) -> None:
    peers.nodes.memory_free = 100 * MiB
    peers.nodes.peers = [
        node("a", memory_free=300 * MiB),
        node("b", memory_free=900 * MiB),
        node("c", memory_free=4096 * MiB, state="draining"),
    ]
    assert peers.forwarding([], pool(memory=256 * MiB))
    assert peers.target(None, 256 * MiB).name == "b"  # type: ignore[union-attr]
    # No peer has enough either: start it here rather than bounce it around.
    assert not peers.forwarding([], pool(memory=1024 * MiB))
    # Enough here: local.
    peers.nodes.memory_free = 512 * MiB
    assert not peers.forwarding([], pool(memory=256 * MiB))
