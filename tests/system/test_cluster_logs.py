"""``fissile fn logs`` in a cluster: the lines printed by instances on two nodes, read through
one node's API, merged by time and tagged with their node."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from clusterkit import cluster
from syskit import wait_for, write

pytestmark = pytest.mark.slow

SHOUT = (
    "from flask import request\n\n"
    "def main():\n"
    "    print('shout', request.args.get('n'), flush=True)\n"
    "    return 'ok'\n"
)


def test_fn_logs_gathers_the_lines_of_every_node(tmp_path: Path) -> None:
    with cluster(tmp_path / "c", 2) as nodes:
        first, second = nodes.nodes
        write(tmp_path / "shout.py", SHOUT)
        first.ok("fn", "create", "--name", "shout", "--code", str(tmp_path / "shout.py"))
        first.ok("route", "create", "--function", "shout", "--url", "/shout")

        # Each router starts an instance of its own (cold starts stay local), so each node's
        # log holds the line its instance printed.
        def answered(node: str, n: int) -> bool:
            router = first if node == "node1" else second
            response = router.get(f"/shout?n={node}-{n}")
            return response.status_code == 200 and response.headers.get("x-fissile-node") is None

        for n, node in enumerate(("node1", "node2", "node1", "node2")):
            wait_for(lambda: answered(node, n), 60, f"/shout through {node}")  # noqa: B023

        def gathered() -> list[dict[str, object]]:
            out = second.ok("fn", "logs", "--name", "shout", "-o", "json").out
            return [json.loads(line) for line in out.splitlines() if line]

        def both() -> bool:
            printed = {line["message"] for line in gathered() if line.get("level") == "STDOUT"}
            return {"shout node1-0", "shout node2-1", "shout node1-2", "shout node2-3"} <= printed

        wait_for(both, 30, "both nodes' lines in fn logs")
        lines = gathered()
        by_message = {line["message"]: line for line in lines if line.get("level") == "STDOUT"}
        assert by_message["shout node1-0"]["node"] == "node1"
        assert by_message["shout node2-1"]["node"] == "node2"
        assert by_message["shout node1-2"]["node"] == "node1"
        assert by_message["shout node2-3"]["node"] == "node2"
        times = [str(line["time"]) for line in lines]
        assert times == sorted(times)
        assert not any("warning" in line for line in lines)

        # Text shows the node before each line's source; the filters reach every node.
        text = first.ok("fn", "logs", "--name", "shout", "--level", "info").out
        printed = [line for line in text.splitlines() if " STDOUT " in line]
        assert any(" node1/" in line and "shout node1-0" in line for line in printed), text
        assert any(" node2/" in line and "shout node2-1" in line for line in printed), text
        tail = first.ok("fn", "logs", "--name", "shout", "--tail", "1", "--level", "info").out
        assert len(tail.splitlines()) == 1, tail
        assert first.ok("fn", "logs", "--name", "shout", "--level", "error").out == ""

        # --requests: each router's access log, merged, each record with its node.
        def requests() -> list[dict[str, object]]:
            out = first.ok("fn", "logs", "--name", "shout", "--requests", "-o", "json").out
            return [json.loads(line) for line in out.splitlines() if line]

        def both_routers() -> bool:
            return {"node1", "node2"} <= {str(r.get("node")) for r in requests()}

        wait_for(both_routers, 30, "both routers' requests in fn logs --requests")
        paths = {(r["node"], r["path"]) for r in requests()}
        assert ("node1", "/shout") in paths and ("node2", "/shout") in paths, paths
        text = second.ok("fn", "logs", "--name", "shout", "--requests").out
        assert " node=node1" in text and " node=node2" in text, text

        # --follow: a line printed on node 2 after the follow began reaches a follower of node 1.
        url = f"{first.api_url}/v1/functions/shout/logs"
        params = {"follow": "true", "format": "json", "tail": "0"}
        headers = {"authorization": f"Bearer {nodes.token}"}
        with (
            httpx.Client(timeout=60) as http,
            http.stream("GET", url, params=params, headers=headers) as response,
        ):
            assert response.status_code == 200
            assert second.get("/shout?n=late").status_code == 200
            for raw in response.iter_lines():
                if raw:
                    followed = json.loads(raw)
                    if followed.get("message") == "shout late":
                        break
            assert followed["node"] == "node2", followed
