"""Which requests a cluster node's router forwards, and to whom (``cluster/peers.py``)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
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
        "memory_free": 4096 * MiB,
    }
    return NodeInfo(name=name, **{**defaults, **fields})


def pool(
    name: str = "f",
    instances: int = 0,
    max_scale: int = 4,
    memory: int = 256 * MiB,
    busy: int = 0,
    starting: int = 0,
    queued: int = 0,
) -> Any:
    """A function's pool here: ``instances`` ready ones (one request at a time), the first
    ``busy`` of them serving one, ``starting`` more starting, ``queued`` requests waiting."""
    spec = SimpleNamespace(max_scale=max_scale, memory=memory)
    ready = [SimpleNamespace(inflight=1 if i < busy else 0) for i in range(instances)]
    return SimpleNamespace(
        name=name,
        instances=ready,
        starting=starting,
        spec=spec,
        limit=1,
        inflight=busy,
        waiters=[object()] * queued,
        pick=lambda: next((i for i in ready if i.inflight < 1), None),
    )


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


def test_a_busy_node_spreads_the_next_instance_to_a_peer_holding_fewer(peers: Peers) -> None:
    peers.nodes.peers = [node("a", functions={"f": 1}), node("b"), node("c", state="draining")]
    # An instance free here: served here, whatever the peers hold.
    assert not peers.forwarding([], pool(instances=2, busy=1))
    # Both busy: the third instance starts on b, which holds 2 fewer (a holds only 1 fewer).
    assert peers.forwarding([], pool(instances=2, busy=2))
    assert peers._chosen is not None and peers._chosen.name == "b"
    # One busy and b as busy as this node by the margin: it starts here.
    assert not peers.forwarding([], pool(instances=1, busy=1))
    # The one starting here takes the request queued first; the next would need another.
    assert not peers.forwarding([], pool(instances=2, busy=2, starting=1, max_scale=8))
    assert peers.forwarding([], pool(instances=2, busy=2, starting=1, queued=1, max_scale=8))
    # Unless the cluster holds max_scale already (3 here, 1 on a): it waits here.
    assert not peers.forwarding([], pool(instances=2, busy=2, starting=1, queued=1))
    # A peer chose this node: served here, never a second hop.
    assert not peers.forwarding([(HOP, b"a")], pool(instances=2, busy=2))


def test_a_busy_node_forwards_to_a_peer_with_a_free_slot(peers: Peers) -> None:
    peers.nodes.peers = [node("a", functions={"f": 3}, idle={"f": 1}), node("b")]
    assert peers.forwarding([], pool(instances=1, busy=1))
    assert peers._chosen is not None and peers._chosen.name == "a"


def test_requests_queued_behind_a_cold_start_spread_past_the_first_instances(
    peers: Peers,
) -> None:
    peers.nodes.peers = [node("a"), node("b")]
    assert not peers.forwarding([], pool(starting=1))  # the cold start's own request
    assert not peers.forwarding([], pool(starting=1, queued=1))  # a second instance here
    assert peers.forwarding([], pool(starting=2, queued=2))  # the third goes to a peer


def test_forwards_in_flight_since_a_peers_heartbeat_count_there(peers: Peers) -> None:
    """A burst does not send every request to the one peer the view shows as free."""
    peers.nodes.peers = [node("a", age=0.5), node("b", age=0.5)]
    peers.nodes.viewed_at = time.monotonic()
    chosen = []
    while peers.forwarding([], pool(instances=3, busy=3, max_scale=8)):
        assert peers._chosen is not None
        chosen.append(peers._chosen.name)
        peers._took((peers._chosen.name, "f"))  # as ``forward`` does while it waits
    # Each forward starts an instance there: 3 held here, then 2 on each peer at most.
    assert chosen == ["a", "b", "a", "b"]
    assert peers._forwarded("f") == {"a": (0, 2), "b": (0, 2)}


def test_a_peers_heartbeat_counts_what_this_node_had_in_flight_there(peers: Peers) -> None:
    """What a peer served for this node at its heartbeat, answered since, is free again."""
    start = time.monotonic()
    early = [peers._took(("a", "f")) for _ in range(3)]  # in flight at a's heartbeat
    peers._trips[("a", "f")].flying.update({ticket: start - 2.0 for ticket in early})
    late = peers._took(("a", "f"))  # sent after it
    peers.nodes.peers = [node("a", age=1.0, functions={"f": 3})]
    peers.nodes.viewed_at = start
    assert peers._forwarded("f") == {"a": (3, 4)}
    for ticket in early:
        peers._gave_back(("a", "f"), ticket)
    assert peers._forwarded("f") == {"a": (3, 1)}  # seen at the heartbeat: fixed for this view
    assert peers.forwarding([], pool(instances=3, busy=3, max_scale=6))  # 2 of a's 3 free
    assert peers._chosen is not None and peers._chosen.name == "a"
    peers._gave_back(("a", "f"), late)
    # A view read after a's next heartbeat, which came after every answer.
    peers.nodes.peers = [node("a", age=0.1, functions={"f": 3}, idle={"f": 3})]
    peers.nodes.viewed_at = time.monotonic() + 0.2
    assert peers._forwarded("f") == {"a": (0, 0)}


def test_waiting_here_is_remembered_until_the_view_or_a_forward_changes(peers: Peers) -> None:
    peers.nodes.viewed_at = time.monotonic()
    peers.nodes.peers = [node("a", functions={"f": 3}, idle={"f": 1})]
    at = peers._took(("a", "f"))  # a forward in flight takes a's free slot
    busy = pool(instances=3, busy=3, max_scale=6)
    assert not peers.forwarding([], busy)  # the cluster holds 6: wait here
    assert peers._nowhere is not None
    assert not peers.forwarding([], busy)
    peers._gave_back(("a", "f"), at)  # answered: a's slot is free again
    assert peers.forwarding([], busy)
    assert peers._chosen is not None and peers._chosen.name == "a"
    peers.nodes.peers = [node("a", functions={"f": 3})]
    assert not peers.forwarding([], busy)
    peers.nodes.peers = [node("a", functions={"f": 2})]  # a new view: a slot free in the cluster
    assert not peers.forwarding([], busy)  # 3 here, 2 there: it starts here
    assert peers.forwarding([], pool(instances=4, busy=4, max_scale=7))  # 4 here: on a


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the test connects


async def test_a_placed_request_whose_peer_is_gone_is_served_here(peers: Peers) -> None:
    peers.nodes.peers = [node("a", address=f"127.0.0.1:{closed_port()}")]
    scope = {"method": "GET", "path": "/function/f", "headers": [(b"host", b"x")]}
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        raise AssertionError("nothing of the request is read")

    try:
        assert peers.forwarding([], pool(instances=2, busy=2))  # to a: 2 fewer
        assert await peers.forward(scope, receive, send) is receive  # a refuses: served here
        assert sent == [] and "a" in peers._skipped()
        assert not peers._trips[("a", "f")].flying
        # A drained node has nowhere else to serve it: the client hears so.
        peers.nodes.draining = True
        peers._unreachable.clear()
        assert peers.forwarding([], pool(instances=2))
        assert await peers.forward(scope, receive, send) is None
        assert sent[0]["status"] == 503
    finally:
        await peers.aclose()


class FakePeer:
    """A peer's router on loopback answering every request with ``status`` and ``body`` (a
    JSON error by default), after reading the request whole; it keeps the bodies it read."""

    def __init__(self, status: int = 503, code: str = "no_capacity") -> None:
        self.status = status
        self.body = json.dumps({"error": {"code": code, "message": "full"}}).encode()
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> FakePeer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                self.received.append(await reader.readexactly(length))
                writer.write(
                    b"HTTP/1.1 %d Unavailable\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n" % (self.status, len(self.body)) + self.body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def body_receive(chunks: list[bytes]) -> Any:
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]

    async def receive() -> Any:
        return messages.pop(0)

    return receive


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def test_a_placed_request_a_full_peer_refuses_is_served_here(peers: Peers) -> None:
    """A peer the view shows under max_scale may find the cluster full: holding no instance,
    it answers 503 no_capacity. The request is served here after all, its body read again,
    and that peer is not chosen for the function again until the next view."""
    async with FakePeer() as fake:
        peers.nodes.peers = [node("a", address=fake.address)]
        scope = {
            "method": "POST",
            "path": "/function/f",
            "headers": [(b"host", b"x"), (b"content-length", b"11")],
        }
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        try:
            assert peers.forwarding([], pool(instances=2, busy=2))  # to a: 2 fewer
            again = await peers.forward(scope, body_receive([b"hello ", b"world"]), send)
            assert again is not None and sent == []  # nothing of a's answer went out
            assert fake.received == [b"hello world"]
            assert await read_body(again) == b"hello world"
            assert not peers._trips[("a", "f")].flying
            # Not placed on a again in this view, for this function only.
            assert not peers.forwarding([], pool(instances=2, busy=2))
            assert peers.forwarding([], pool(name="g", instances=2, busy=2))
            peers._chosen = None
            # The next view: a may have room again.
            peers.nodes.peers = [node("a", address=fake.address)]
            assert peers.forwarding([], pool(instances=2, busy=2))
            # A bodiless request comes back as it was: nothing to read again.
            get = {"method": "GET", "path": "/function/f", "headers": [(b"host", b"x")]}

            async def untouched() -> Any:
                raise AssertionError("nothing of the request is read")

            assert await peers.forward(get, untouched, send) is untouched
            assert sent == []
        finally:
            await peers.aclose()


async def test_other_answers_of_a_peer_reach_the_client(peers: Peers) -> None:
    """A 503 that is not a refusal (a queue timeout there, or a request not placed but
    forwarded because this node is drained) is the client's answer, sent as it came."""
    async with FakePeer(code="queue_timeout") as fake:
        peers.nodes.peers = [node("a", address=fake.address)]
        scope = {"method": "GET", "path": "/function/f", "headers": [(b"host", b"x")]}
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        try:
            assert peers.forwarding([], pool(instances=2, busy=2))
            assert await peers.forward(scope, body_receive([b""]), send) is None
            assert sent[0]["status"] == 503
            assert json.loads(sent[1]["body"])["error"]["code"] == "queue_timeout"
            assert "a" not in peers._skipped("f")
            fake.body = json.dumps({"error": {"code": "no_capacity", "message": "x"}}).encode()
            peers.nodes.draining = True  # not placed: a drained node has nowhere else
            sent.clear()
            assert peers.forwarding([], pool(instances=2))
            assert await peers.forward(scope, body_receive([b""]), send) is None
            assert sent[0]["status"] == 503
        finally:
            await peers.aclose()
