"""Operating a cluster (``clusterkit``: ``fissile up --cluster`` nodes on one machine sharing a
PostgreSQL schema): a drain that outlives the drained node's restart, forgetting a retired
node, and a cancel through one node that stops the attempt another node runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from clusterkit import cluster
from syskit import assert_one_line_error, wait_for, write

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
