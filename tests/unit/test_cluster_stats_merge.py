"""Merging every node's stats (``cluster/stats.py``): counts and rates add, quantiles come from
the summed histograms, instances add with a share per node; a peer that fails or is slow is
skipped and named."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from fissile.cluster.nodes import NodeInfo, Nodes
from fissile.cluster.peers import Peers
from fissile.cluster.stats import ClusterStats, UnknownNode, merge, zero
from fissile.observability.crashes import CrashLog
from fissile.observability.metrics import Metrics
from fissile.observability.stats import Stats


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gauges(ready: int, busy: int, queued: int = 0) -> Any:
    def of(name: str) -> dict[str, Any]:
        return {
            "instances": {
                "ready": ready,
                "busy": busy,
                "idle": ready - busy,
                "starting": 0,
                "desired": ready,
            },
            "processes": [
                {"id": f"i{n}", "pid": 100 + n, "state": "ready", "inflight": 0}
                for n in range(ready)
            ],
            "queued": queued,
            "inflight": busy,
            "restarts": 0,
            "last_exit_reason": None,
        }

    return of


def node_stats(
    requests: list[tuple[int, float]], ready: int = 1, busy: int = 0, queued: int = 0
) -> Stats:
    """A node's ``Stats`` after ``requests`` (status, seconds) over the last 60 s."""
    metrics = Metrics()
    clock = Clock()
    stats = Stats(metrics, gauges(ready, busy, queued), clock=clock)
    hello = metrics.function("hello")
    stats.sample()
    clock.now += 60
    for status, seconds in requests:
        hello.request(status, seconds)
    return stats


def test_counts_and_rates_add_and_quantiles_are_those_of_every_request() -> None:
    fast = [(200, 0.002)] * 90 + [(500, 0.003)] * 10
    slow = [(200, 0.8)] * 20 + [(503, 2.0)] * 5
    one, two = node_stats(fast, ready=2, busy=1), node_stats(slow, ready=1, queued=3)
    parts = {
        "n1": one.function("hello", 60, buckets=True),
        "n2": two.function("hello", 60, buckets=True),
    }
    merged = merge("hello", 60, parts)
    # The quantiles of one node that had served both nodes' requests.
    everything = node_stats(fast + slow).function("hello", 60)
    assert merged["p50_ms"] == everything["p50_ms"]
    assert merged["p99_ms"] == everything["p99_ms"]
    # ... which no average of the nodes' quantiles gives.
    average = (parts["n1"]["p99_ms"] + parts["n2"]["p99_ms"]) / 2
    assert merged["p99_ms"] != pytest.approx(average)
    assert merged["requests"] == 125 == everything["requests"]
    assert merged["rate"] == pytest.approx(125 / 60, abs=0.002)
    assert merged["statuses"] == {"200": 110, "500": 10, "503": 5}
    assert (merged["errors"], merged["error_rate"]) == (15, 0.12)
    assert merged["instances"] == {"ready": 3, "busy": 1, "idle": 2, "starting": 0, "desired": 3}
    assert (merged["queued"], merged["inflight"]) == (3, 1)
    assert [(p["node"], p["id"]) for p in merged["processes"]] == [
        ("n1", "i0"),
        ("n1", "i1"),
        ("n2", "i0"),
    ]
    assert "buckets" not in merged
    shares = {n["node"]: n for n in merged["nodes"]}
    assert (shares["n1"]["requests"], shares["n2"]["requests"]) == (100, 25)
    assert shares["n2"]["p99_ms"] == parts["n2"]["p99_ms"]
    assert shares["n1"]["instances"]["ready"] == 2


def series(**values: Any) -> dict[str, Any]:
    return {"interval": 5.0, **values}


def test_series_rates_add_and_p99_is_the_slowest_nodes_and_says_so() -> None:
    one = {**zero("f", 60), "series": series(rate=[1.0, 2.0, 3.0], p99_ms=[None, 4.0, 1.0])}
    two = {**zero("f", 60), "series": series(rate=[0.5, 0.5], p99_ms=[9.0, None])}
    merged = merge("f", 60, {"n1": one, "n2": two})["series"]
    # Both end at their last sampling: the shorter one lines up with the newest intervals.
    assert merged["rate"] == [1.0, 2.5, 3.5]
    assert merged["p99_ms"] == [None, 9.0, 1.0]
    assert merged["p99_merge"] == "max"


def test_recent_crashes_of_every_node_newest_first() -> None:
    one = {**zero("f", 60), "recent_crashes": [{"time": "2026-01-01T00:00:01Z", "reason": "a"}]}
    two = {**zero("f", 60), "recent_crashes": [{"time": "2026-01-01T00:00:02Z", "reason": "b"}]}
    crashes = merge("f", 60, {"n1": one, "n2": two})["recent_crashes"]
    assert [(c["node"], c["reason"]) for c in crashes] == [("n2", "b"), ("n1", "a")]


def peer(name: str, age: float = 0.5) -> NodeInfo:
    now = datetime.now(UTC)
    return NodeInfo(name, f"{name}:8080", "0.1.0", "active", now, now, age)


def cluster(stats: Stats, name: str = "me") -> ClusterStats:
    gathered = ClusterStats(
        Nodes("postgresql://unused", name, f"{name}:8080", None), "s", stats, CrashLog()
    )
    # The peers here answer in process, in milliseconds: a generous bound all the same, as a
    # loaded machine (CI, three test processes on two cores) once took 0.5 s to answer.
    gathered.timeout = 3.0
    return gathered


def test_every_live_node_is_asked_and_a_silent_one_named() -> None:
    here = cluster(node_stats([(200, 0.01)] * 4, ready=1))
    other = cluster(node_stats([(200, 0.01)] * 6, ready=2), name="other")
    seen: list[httpx.Request] = []

    async def peers(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "slow":
            await asyncio.Event().wait()  # never answers: the gathering's timeout ends it
        if request.url.host == "broken":
            return httpx.Response(500, text="no")
        if request.headers.get("authorization") != "Bearer s":
            return httpx.Response(401)
        status, body = await other.serve(dict(request.url.params))
        return httpx.Response(status, content=body)

    here.transport = httpx.MockTransport(peers)
    here.nodes.peers = [peer("other"), peer("slow"), peer("broken"), peer("gone", age=10.0)]
    answer = asyncio.run(here.all(["hello", "unborn"], 60, series=False))
    assert answer["nodes"] == ["me", "other"]
    assert [w["node"] for w in answer["warnings"]] == ["broken", "slow"]  # not the dead one
    assert "did not answer (timed out)" in answer["warnings"][1]["warning"]
    hello, unborn = answer["functions"]
    assert (hello["requests"], hello["instances"]["ready"]) == (10, 3)
    assert [(n["node"], n["requests"]) for n in hello["nodes"]] == [("me", 4), ("other", 6)]
    assert (unborn["function"], unborn["requests"]) == ("unborn", 0)
    assert seen[0].url.path == "/_fissile/cluster/stats"
    assert seen[0].url.params["since"] == "60"

    here.nodes.peers = [peer("other"), peer("broken")]  # one wait for the silent peer is enough
    one = asyncio.run(here.function("hello", 600))
    assert one["requests"] == 10 and "series" in one and one["recent_crashes"] == []
    assert [w["node"] for w in one["warnings"]] == ["broken"]


def test_one_node_alone_and_an_unknown_one_refused() -> None:
    here = cluster(node_stats([(200, 0.01)] * 4))
    other = cluster(node_stats([(200, 0.01)] * 6, ready=2), name="other")
    asked: list[str] = []

    async def peers(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        status, body = await other.serve(dict(request.url.params))
        return httpx.Response(status, content=body)

    here.transport = httpx.MockTransport(peers)
    here.nodes.peers = [peer("other"), peer("third"), peer("gone", age=10.0)]
    theirs = asyncio.run(here.function("hello", 60, node="other"))
    assert (theirs["requests"], [n["node"] for n in theirs["nodes"]]) == (6, ["other"])
    assert asked == ["other"]
    mine = asyncio.run(here.all(["hello"], 60, series=False, node="me"))
    assert mine["nodes"] == ["me"] and mine["functions"][0]["requests"] == 4
    assert asked == ["other"]  # the node asked alone: no peer
    for unknown in ("nobody", "gone"):
        with pytest.raises(UnknownNode, match=unknown):
            asyncio.run(here.all(["hello"], 60, series=False, node=unknown))


def test_a_peer_refuses_a_malformed_window() -> None:
    other = cluster(node_stats([]))
    for since in ("abc", "0", "7200"):
        status, body = asyncio.run(other.serve({"since": since}))
        assert status == 422, since
        assert json.loads(body)["error"]["code"] == "invalid"


async def test_the_peer_endpoint_needs_the_token_and_answers_this_nodes_windows() -> None:
    nodes = Nodes("postgresql://unused", "me", "me:8080", None)
    peers = Peers(nodes, "s", None, 30.0)  # type: ignore[arg-type]
    peers.stats = ClusterStats(nodes, "s", node_stats([(200, 0.01)] * 3), CrashLog())

    async def get(token: str) -> tuple[int, Any]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": "/_fissile/cluster/stats",
            "query_string": b"since=60&function=hello",
            "headers": [(b"authorization", f"Bearer {token}".encode())],
        }
        await peers.internal(scope, None, send)
        return sent[0]["status"], json.loads(sent[-1]["body"])

    status, answer = await get("wrong")
    assert status == 401
    status, answer = await get("s")
    assert status == 200 and answer["node"] == "me"
    (hello,) = answer["functions"]
    assert (hello["function"], hello["requests"], sum(hello["buckets"])) == ("hello", 3, 3)
    await peers.aclose()
