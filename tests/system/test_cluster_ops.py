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
        response = first.request("DELETE", f"/invocations/{invocation_id}")  # node1's router
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
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


def test_pruned_builds_take_their_archives_along_on_every_node(tmp_path: Path) -> None:
    import psycopg

    with cluster(tmp_path / "c", 2, "--keep-revisions", "1") as nodes:
        first, second = nodes.nodes
        write(tmp_path / "v1.py", 'def main():\n    return "one"\n')
        write(tmp_path / "v2.py", 'def main():\n    return "two"\n')
        first.ok("fn", "create", "--name", "f", "--code", str(tmp_path / "v1.py"))
        assert second.get("/function/f").text == "one"  # node2 fetched the first build

        def holders() -> dict[str, set[str]]:
            with psycopg.connect(nodes.store, autocommit=True) as conn:
                found: dict[str, set[str]] = {}
                builds = "SELECT key, node FROM fissile_artifacts WHERE key NOT LIKE 'source:%'"
                for key, node in conn.execute(builds):
                    found.setdefault(key, set()).add(node)
                return found

        def archives(node: Platform) -> set[str]:
            return {path.stem for path in (node.data_dir / "artifacts").glob("*.tar")}

        wait_for(lambda: len(holders()) == 1 and len(archives(second)) == 1, 30, "build 1 held")
        [one] = holders()
        assert holders()[one] == {"node1", "node2"}
        assert archives(first) == archives(second)
        first_archive = archives(first)
        assert (second.data_dir / "deploy" / one).is_dir()

        # A new build: revision 2; with --keep-revisions 1, revision 1's build is pruned.
        first.ok("fn", "update", "--name", "f", "--code", str(tmp_path / "v2.py"))
        wait_for(lambda: second.get("/function/f").text == "two", 60, "node2 serving build 2")

        def pruned() -> bool:
            return (
                one not in holders()
                and not archives(first) & first_archive
                and not archives(second) & first_archive
                and not (first.data_dir / "deploy" / one).exists()
                and not (second.data_dir / "deploy" / one).exists()
            )

        wait_for(pruned, 60, "build 1's archives, rows and deploy dirs gone on both nodes")
        [two] = holders()
        assert holders()[two] == {"node1", "node2"}
        assert len(archives(first)) == len(archives(second)) == 1
        assert first.get("/function/f").text == "two"
