"""Gathering a function's log lines from every node (``cluster/logs.py``): merged by time,
tagged with their node, a peer that fails or is slow skipped and named."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from fissile.cluster.logs import ClusterLogs, merge, parse_params, render_text
from fissile.cluster.nodes import NodeInfo, Nodes
from fissile.observability import loglines
from fissile.observability.logs import LogBook


def node(name: str, age: float = 0.5) -> NodeInfo:
    now = datetime.now(UTC)
    return NodeInfo(name, f"{name}:8080", "0.1.0", "active", now, now, age)


def line(time: str, message: str, source: str = "abc123") -> dict[str, Any]:
    return {
        "time": time,
        "instance": source,
        "level": "STDOUT",
        "invocation_id": None,
        "message": message,
        "source": "function",
    }


@pytest.fixture
def gatherer(tmp_path: Path) -> ClusterLogs:
    book = LogBook(tmp_path / "logs")
    book.function_log("f").write_text(
        "2026-01-01T00:00:01.000Z abc123 STDOUT [-] mine one\n"
        "2026-01-01T00:00:03.000Z abc123 ERROR [-] mine two\n"
    )
    nodes = Nodes("postgresql://unused", "me", "me:8080", None)
    logs = ClusterLogs(nodes, "secret", book)
    # Peers answer in process, in milliseconds; generous all the same for a loaded machine.
    logs.timeout = 3.0
    return logs


def test_every_nodes_lines_merged_by_time_and_tagged(gatherer: ClusterLogs) -> None:
    seen: list[httpx.Request] = []

    async def peer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "slow":
            await asyncio.Event().wait()  # never answers: the gathering's timeout ends it
        if request.url.host == "broken":
            return httpx.Response(500, text="no")
        body = json.dumps(line("2026-01-01T00:00:02.000Z", "theirs")) + "\n"
        return httpx.Response(200, text=body)

    gatherer.transport = httpx.MockTransport(peer)
    gatherer.nodes.peers = [node("other"), node("slow"), node("broken"), node("gone", age=10.0)]
    keep = loglines.LogFilter(level=20)
    lines, skipped = asyncio.run(gatherer.gather("f", keep, 200))
    assert [(x["node"], x["message"]) for x in lines] == [
        ("me", "mine one"),
        ("other", "theirs"),
        ("me", "mine two"),
    ]
    assert sorted(skipped) == ["broken", "slow"]  # a dead node is not asked at all
    assert skipped["slow"] == "timed out"
    assert "500" in skipped["broken"]
    first = seen[0]
    assert first.url.path == "/_fissile/cluster/logs/f"
    assert first.headers["authorization"] == "Bearer secret"
    assert parse_params(dict(first.url.params)) == (keep, 200)


def test_the_last_tail_lines_of_all_nodes() -> None:
    parts = {
        "a": [line("2026-01-01T00:00:01.000Z", "1"), line("2026-01-01T00:00:04.000Z", "4")],
        "b": [line("2026-01-01T00:00:02.000Z", "2"), line("2026-01-01T00:00:03.000Z", "3")],
    }
    assert [x["message"] for x in merge(parts, 3)] == ["2", "3", "4"]
    assert merge(parts, 0) == []


def test_text_shows_the_node_before_the_source() -> None:
    tagged = {**line("2026-01-01T00:00:01.000Z", "hi"), "node": "n2"}
    assert render_text(tagged) == b"2026-01-01T00:00:01.000Z n2/abc123 STDOUT [-] hi\n"
    platform = {**tagged, "instance": None, "level": "INFO"}
    assert render_text(platform) == b"2026-01-01T00:00:01.000Z n2/fissile INFO [-] hi\n"


def test_a_peer_sends_a_malformed_filter() -> None:
    with pytest.raises(ValueError):
        parse_params({"tail": "-1"})
    with pytest.raises(ValueError):
        parse_params({"level": "loud"})


def test_requests_of_every_router_and_a_silent_one_named(gatherer: ClusterLogs) -> None:
    async def peer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down":
            raise httpx.ConnectError("refused", request=request)
        assert request.url.path == "/_fissile/cluster/requests/f"
        assert request.url.params["limit"] == "2"
        return httpx.Response(200, text=json.dumps({"time": "2026-01-01T00:00:02Z"}) + "\n")

    gatherer.transport = httpx.MockTransport(peer)
    gatherer.nodes.peers = [node("other"), node("down")]
    listing = asyncio.run(gatherer.requests_listing("f", 2))
    assert listing[0]["node"] == "down" and "did not answer" in listing[0]["warning"]
    assert listing[1:] == [{"time": "2026-01-01T00:00:02Z", "node": "other"}]  # no access log here
    status, body = gatherer.serve("requests", "f", {"limit": "5"})
    assert (status, body) == (200, b"")
    assert gatherer.serve("logs", "f", {"tail": "x"})[0] == 422


def test_a_follower_gets_every_nodes_new_lines_once(
    gatherer: ClusterLogs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fissile.cluster.logs.FOLLOW_EVERY", 0.01)
    theirs = [line("2026-01-01T00:00:02.000Z", "old theirs")]
    asked: list[str | None] = []

    async def peer(request: httpx.Request) -> httpx.Response:
        since = request.url.params.get("since")
        asked.append(since)
        kept = [x for x in theirs if since is None or x["time"] >= since]
        return httpx.Response(200, text="".join(json.dumps(x) + "\n" for x in kept))

    gatherer.transport = httpx.MockTransport(peer)
    gatherer.nodes.peers = [node("other")]
    polls = 0

    def gone() -> bool:
        nonlocal polls
        polls += 1
        if polls == 1:  # between the history and the first poll: one new line on each node
            theirs.append(line("2099-01-01T00:00:01.000Z", "new theirs"))
            with gatherer.book.function_log("f").open("a") as log:
                log.write("2099-01-01T00:00:02.000Z abc123 STDOUT [-] new mine\n")
        return polls >= 3

    async def read() -> list[bytes]:
        follower = gatherer.follow("f", loglines.LogFilter(), 200, True, gone)
        return [chunk async for chunk in follower]

    chunks = asyncio.run(read())
    got = [json.loads(x) for chunk in chunks for x in chunk.splitlines()]
    assert [(x["node"], x["message"]) for x in got] == [
        ("me", "mine one"),
        ("other", "old theirs"),
        ("me", "mine two"),
        ("other", "new theirs"),
        ("me", "new mine"),
    ]
    assert asked[0] is None and all(since is not None for since in asked[1:])
