"""Operating a cluster (``clusterkit``: ``fissile up --cluster`` nodes on one machine sharing a
PostgreSQL schema): a drain that outlives the drained node's restart, forgetting a retired
node, and a cancel through one node that stops the attempt another node runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from clusterkit import cluster
from syskit import Platform, assert_one_line_error, process_table, wait_for, write

pytestmark = pytest.mark.slow

HELLO = 'def main():\n    return "Hello from the cluster"\n'


def test_a_drain_outlives_the_drained_nodes_restart_until_resumed(tmp_path: Path) -> None:
    with cluster(tmp_path / "c", 2) as nodes:
        first, second = nodes.nodes
        write(tmp_path / "hello.py", HELLO)
        first.ok("fn", "create", "--name", "hello", "--code", str(tmp_path / "hello.py"))
        assert second.get("/function/hello").status_code == 200
        first.ok("node", "drain", "node2")
        second.stop()  # SIGTERM: its row says stopped, and still drained
        listed = first.nodes()["node2"]
        assert listed["state"] == "stopped" and listed["drained"] is True
        assert "stopped (drained)" in first.ok("node", "list").out

        second.start()  # same name, same data dir, new ports
        assert "node node2 is draining" in second.stderr()
        assert first.nodes()["node2"]["state"] == "draining"
        # From its first request on, it serves nothing new itself: the peer does.
        for _ in range(5):
            response = second.get("/function/hello")
            assert response.status_code == 200, response.text
            assert response.headers.get("x-fissile-node") == "node1"

        first.ok("node", "resume", "node2")
        wait_for(
            lambda: "x-fissile-node" not in second.get("/function/hello").headers,
            10,
            "node2 serving again",
        )
        second.stop()
        second.start()
        assert first.nodes()["node2"]["state"] == "active"  # resumed: active after a restart
        assert "x-fissile-node" not in second.get("/function/hello").headers


def test_forget_removes_a_retired_node_and_refuses_a_running_one(tmp_path: Path) -> None:
    with cluster(tmp_path / "c", 2) as nodes:
        first, second = nodes.nodes
        assert_one_line_error(first.cli("node", "forget", "node2"), "running")
        assert_one_line_error(first.cli("node", "forget", "nobody"), "not found")
        first.ok("node", "drain", "node2")
        second.stop()
        first.ok("node", "forget", "node2")
        assert set(first.nodes()) == {"node1"}
        # A node started under a forgotten name joins again, as a new one (not drained).
        second.start()
        wait_for(
            lambda: first.nodes().get("node2", {}).get("state") == "active",
            30,
            "node2 joined again, active",
        )


SLEEPY = """
import time


def main(request):
    time.sleep(float(request.query.get("s", "60")))
    return "slept"
"""


def test_a_cancel_through_one_node_stops_the_attempt_running_on_another(tmp_path: Path) -> None:
    with cluster(tmp_path / "c", 2) as nodes:
        first, second = nodes.nodes
        write(tmp_path / "sleepy.py", SLEEPY)
        first.ok("fn", "create", "--name", "sleepy", "--code", str(tmp_path / "sleepy.py"))
        # Accepted by node2's router, which has room for it: node2 holds and runs it.
        accepted = second.request("POST", "/async-function/sleepy?s=120", content=b"x")
        assert accepted.status_code == 202, accepted.text
        invocation_id = accepted.json()["id"]

        def running_on_node2() -> bool:
            document = first.get(f"/invocations/{invocation_id}").json()
            return document["status"] == "running" and document["node"] == "node2"

        wait_for(running_on_node2, 60, "the invocation running on node2")

        def busy_on_node2() -> list[int] | None:
            status = control(second, "GET", "/v1/functions/sleepy").json()["status"]
            return status["pids"] if status["busy"] >= 1 else None

        # Its instance took the request (a cancel during the cold start leaves it idle).
        [pid] = wait_for(busy_on_node2, 60, "node2's instance running the invocation")
        assert not first.nodes()["node1"]["functions"].get("sleepy")

        cancelled_at = time.monotonic()
        first.ok("invocation", "cancel", invocation_id)
        # node2 stops its attempt: the instance running it is killed, within a few seconds
        # (the function would sleep for two minutes).
        wait_for(lambda: pid not in process_table(), 10, "node2's instance killed")
        print(f"cancel to instance killed: {time.monotonic() - cancelled_at:.2f} s")
        for node in (first, second):
            document = node.get(f"/invocations/{invocation_id}").json()
            assert document["status"] == "cancelled", document
        assert "cancelled through another node" in second.stderr()
        logs = first.ok("fn", "logs", "--name", "sleepy").out
        assert f"invocation {invocation_id} cancelled through another node" in logs, logs
        # Its outcome stays the cancel's: the stopped attempt recorded nothing over it.
        assert first.get(f"/invocations/{invocation_id}").json()["status"] == "cancelled"


def control(platform: Platform, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request to the control API of ``platform`` (one node), with the cluster's token."""
    token = (platform.data_dir / "api-token").read_text().strip()
    headers = {"authorization": f"Bearer {token}"}
    return platform.http.request(method, platform.api_url + path, headers=headers, **kwargs)
