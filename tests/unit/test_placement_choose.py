"""Where a request goes when this node's instances of its function are all busy
(``cluster/placement.py``): a pure function of the heartbeat view."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fissile.cluster.nodes import NodeInfo
from fissile.cluster.placement import SPREAD_MARGIN, choose, warm_share

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
        "memory_free": 4096 * MiB,
    }
    return NodeInfo(name=name, **{**defaults, **fields})


def place(held: int, peers: list[NodeInfo], **given: Any) -> str | None:
    arguments: dict[str, Any] = {
        "memory": 256 * MiB,
        "memory_free": 4096 * MiB,
        "max_scale": 10,
        "limit": 1,
        "forwarded": {},
        **given,
    }
    chosen = choose("f", held=held, peers=peers, **arguments)
    return None if chosen is None else chosen.name


def test_the_margin_decides_whether_the_next_instance_leaves() -> None:
    assert SPREAD_MARGIN == 2
    assert place(1, [node("a")]) is None  # the second instance stays here
    assert place(2, [node("a")]) == "a"
    assert place(3, [node("a", functions={"f": 2})]) is None
    assert place(4, [node("a", functions={"f": 2})]) == "a"


def test_the_peer_holding_fewest_starts_it_then_the_one_with_most_memory() -> None:
    peers = [
        node("a", functions={"f": 1}),
        node("b", memory_free=1024 * MiB),
        node("c", memory_free=2048 * MiB),
    ]
    assert place(3, peers) == "c"
    assert place(3, peers[:2]) == "b"
    assert place(3, peers[:1]) == "a"


def test_a_free_slot_anywhere_beats_a_start() -> None:
    peers = [
        node("a"),
        node("b", functions={"f": 5}, idle={"f": 1}),
        node("c", functions={"f": 2}, idle={"f": 2}),
    ]
    # c's slots are taken by what this node forwarded since its heartbeat; b has one left.
    assert place(1, peers, forwarded={"c": (0, 2)}) == "b"
    assert place(1, peers) == "c"  # the most free slots
    # Even with the cluster at max_scale: a warm instance takes it.
    assert place(5, peers[:2], max_scale=10) == "b"


def test_nothing_starts_past_max_scale_anywhere() -> None:
    peers = [node("a", functions={"f": 2}), node("b")]
    assert place(4, peers, max_scale=6) is None
    assert place(4, peers, max_scale=7) == "b"
    # A dead or drained node does not start it, but what a draining one holds counts.
    assert (
        place(4, [node("a", functions={"f": 2}, state="draining"), node("b")], max_scale=6) is None
    )
    assert place(4, [node("a", functions={"f": 2}, age=10.0), node("b")], max_scale=6) == "b"
    # Requests forwarded past a peer's free slots count as instances starting there.
    assert place(4, [node("b")], max_scale=6, forwarded={"b": (0, 2)}) is None
    assert place(4, [node("b")], max_scale=6, forwarded={"b": (0, 2)}, limit=2) == "b"


def test_slots_this_nodes_answered_requests_held_at_a_heartbeat_are_free_again() -> None:
    full = node("a", functions={"f": 2})  # both busy at its heartbeat
    # Busy with this node's two requests, answered since: both free, even at max_scale.
    assert place(4, [full], max_scale=6, forwarded={"a": (2, 0)}) == "a"
    assert place(4, [full], max_scale=6, forwarded={"a": (2, 1)}) == "a"
    assert place(4, [full], max_scale=6, forwarded={"a": (2, 2)}) is None
    # Busy with others' requests (its own clients, other nodes): still taken.
    assert place(4, [full], max_scale=6, forwarded={"a": (0, 0)}) is None
    assert place(4, [full], max_scale=6, forwarded={"a": (1, 0)}) == "a"
    # One of two free at its heartbeat, the other busy with this node's answered request.
    half = node("a", functions={"f": 2}, idle={"f": 1})
    assert place(4, [half], max_scale=6, forwarded={"a": (1, 1)}) == "a"
    assert place(4, [half], max_scale=6, forwarded={"a": (1, 2)}) is None


def test_only_peers_with_room_serving_and_reachable_start_it() -> None:
    assert place(3, [node("a", memory_free=100 * MiB)]) is None
    assert place(3, [node("a", memory_free=0)]) is None  # unknown: not chosen
    assert place(3, [node("a", state="draining")]) is None
    assert place(3, [node("a", state="stopped")]) is None
    assert place(3, [node("a")], unreachable={"a"}) is None
    assert place(3, [node("a", idle={"f": 3})], unreachable={"a"}) is None


def test_short_of_memory_here_any_peer_with_room_starts_it() -> None:
    peers = [node("a", functions={"f": 4})]
    assert place(1, peers) is None
    assert place(1, peers, memory_free=100 * MiB) == "a"
    assert place(1, [node("a", memory_free=100 * MiB)], memory_free=100 * MiB) is None


def share(peers: list[NodeInfo], min_scale: int = 3, draining: bool = False) -> int:
    return warm_share("f", min_scale=min_scale, memory=256 * MiB, draining=draining, peers=peers)


def test_instances_kept_warm_are_shared_between_the_serving_nodes() -> None:
    assert share([]) == 3  # alone: the whole minimum
    assert share([node("a"), node("b")]) == 1
    assert share([node("a"), node("b")], min_scale=4) == 2  # rounded up (claims bound it)
    assert share([node("a"), node("b")], min_scale=1) == 1  # one node's claim wins
    # A peer that will not take its share leaves it to the others.
    assert share([node("a", state="draining"), node("b")]) == 2
    assert share([node("a", age=10.0), node("b")]) == 2
    assert share([node("a", memory_free=100 * MiB), node("b")]) == 2
    # ...unless it holds instances anyway: they count.
    assert share([node("a", memory_free=100 * MiB, functions={"f": 1}), node("b")]) == 1
    assert share([node("a", functions={"f": 3}), node("b")]) == 1
    assert share([node("a", functions={"f": 3}), node("b")], min_scale=6) == 2


def test_a_drained_node_keeps_warm_only_what_the_others_cannot() -> None:
    assert share([node("a"), node("b")], draining=True) == 0
    assert share([node("a", memory_free=0)], draining=True) == 3
    assert share([], draining=True) == 3
