"""A route's rate limit holds across a cluster (``clusterkit``): two nodes' routers, called
in turn, let through about what one router would, not twice as much
(``fissile/cluster/ratelimits.py``)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from clusterkit import cluster
from syskit import wait_for, write

from fissile.cluster.ratelimits import INTERVAL

pytestmark = pytest.mark.slow

HELLO = 'def main():\n    return "hello"\n'
RATE, BURST = 5.0, 5
SPAN = 4.0  # seconds of calls


def test_a_routes_rate_holds_across_two_nodes(tmp_path: Path) -> None:
    with cluster(tmp_path / "c", 2) as nodes:
        first = nodes.nodes[0]
        write(tmp_path / "hello.py", HELLO)
        first.ok("fn", "create", "--name", "hello", "--code", str(tmp_path / "hello.py"))
        # Warm on both nodes through the function's door, which the route's rate does not
        # count: a cold start inside the span would only let the buckets refill.
        for node in nodes.nodes:
            wait_for(lambda n=node: n.get("/function/hello").status_code == 200, 60, "warm")
        first.ok(
            "route", "create", "--name", "limited", "--function", "hello", "--url", "/limited",
            "--rate", f"{RATE:g}/s", "--burst", str(BURST),
        )  # fmt: skip
        # Known to both routers, without spending a token (an OPTIONS the router answers).
        for node in nodes.nodes:
            wait_for(
                lambda n=node: n.request("OPTIONS", "/limited").status_code == 204,
                30,
                f"{node.name} routing /limited",
            )

        statuses: dict[int, int] = {}
        clients = [httpx.Client(base_url=node.router_url, timeout=30) for node in nodes.nodes]
        try:
            calls = 0
            started = time.monotonic()
            while time.monotonic() - started < SPAN:
                response = clients[calls % 2].get("/limited")
                calls += 1
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                # A forwarded request (placement) is counted by the router that serves it.
                assert response.status_code in (200, 429), response.text
            elapsed = time.monotonic() - started
        finally:
            for client in clients:
                client.close()

        passed = statuses.get(200, 0)
        limit = BURST + RATE * elapsed  # what one router lets through in the span
        # docs/cluster.md: at most one interval's worth more per node (a message in flight,
        # a late event loop on a loaded machine: allow three), and at least the limit less
        # a token (what a bucket holds when the span ends; debits are never counted twice).
        overshoot = 2 * RATE * INTERVAL * 3
        print(f"{calls} calls in {elapsed:.2f} s: {statuses}; limit {limit:.1f}")
        assert calls > 4 * limit, statuses  # the clients asked for far more than the limit
        assert limit - 2 <= passed <= limit + overshoot + 1, (statuses, limit)
        for node in nodes.nodes:  # NATS was there throughout: no node counted alone
            assert "rate limits: NATS" not in node.stderr(), node.stderr()[-3000:]
