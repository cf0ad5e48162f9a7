"""``fissile top`` and ``fn stats`` in a cluster: requests served through two nodes' routers,
read through a third node's API, add up, with every node's instances; ``/metrics`` names the
node it is scraped from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from clusterkit import cluster
from syskit import wait_for, write

pytestmark = pytest.mark.slow

HELLO = "def main():\n    return 'hello'\n"


def test_top_and_fn_stats_add_up_every_node(tmp_path: Path) -> None:
    with cluster(tmp_path / "c", 3) as nodes:
        first, second, third = nodes.nodes
        write(tmp_path / "hello.py", HELLO)
        first.ok("fn", "create", "--name", "hello", "--code", str(tmp_path / "hello.py"))
        first.ok("route", "create", "--function", "hello", "--url", "/hello")

        # Each router starts an instance of its own (a cold start stays local) and serves its
        # requests with it: 3 through node 1, 5 through node 2.
        served = {"node1": 0, "node2": 0}

        def answered(router: Any, node: str) -> bool:
            response = router.get("/hello")
            if response.status_code != 200:
                return False
            served[response.headers.get("x-fissile-node", node)] += 1
            return True

        for router, node, count in ((first, "node1", 3), (second, "node2", 5)):
            for n in range(count):
                wait_for(lambda: answered(router, node), 60, f"/hello {n} through {node}")  # noqa: B023
        assert served == {"node1": 3, "node2": 5}, served  # nothing was forwarded

        def stats(*extra: str) -> dict[str, Any]:
            answer: dict[str, Any] = third.json_of("fn", "stats", "--name", "hello", *extra)
            return answer

        def counted() -> bool:
            document = stats()
            return document["requests"] == 8 and document["instances"]["ready"] == 2

        wait_for(counted, 30, "both nodes' requests and instances in fn stats through node 3")
        document = stats()
        assert document["warnings"] == []
        shares = {share["node"]: share for share in document["nodes"]}
        assert {name: share["requests"] for name, share in shares.items()} == {
            "node1": 3,
            "node2": 5,
            "node3": 0,
        }
        assert {name: share["instances"]["ready"] for name, share in shares.items()} == {
            "node1": 1,
            "node2": 1,
            "node3": 0,
        }
        assert sorted(p["node"] for p in document["processes"]) == ["node1", "node2"]
        assert document["statuses"] == {"200": 8}
        assert document["p50_ms"] is not None and document["p99_ms"] is not None
        assert document["series"]["p99_merge"] == "max"

        # top: one line for the function, its REQS the sum, its WARM both nodes' instances.
        top = third.ok("top", "--once").out
        header, *rest = top.splitlines()
        assert "1 function on 3 nodes" in header, top
        row = next(line.split() for line in rest if line.startswith("hello"))
        assert (row[2], row[6]) == ("8", "2"), top

        # The table form names each node's share.
        text = third.ok("fn", "stats", "--name", "hello").out
        assert "Requests:    8 " in text, text
        assert "Nodes:" in text, text
        node2 = next(line.split() for line in text.splitlines() if line.strip().startswith("node2"))
        assert node2[2] == "5", text

        # --node: one node's numbers alone.
        alone = stats("--node", "node2")
        assert (alone["requests"], [n["node"] for n in alone["nodes"]]) == (5, ["node2"])
        top = third.ok("top", "--once", "--node", "node1").out
        row = next(line.split() for line in top.splitlines() if line.startswith("hello"))
        assert row[2] == "3", top
        wrong = third.cli("top", "--once", "--node", "nobody")
        assert wrong.rc != 0 and "nobody" in wrong.err, wrong

        # The dashboard of node 3 shows the same: the sum, and each node's instances.
        with httpx.Client(base_url=third.api_url, follow_redirects=False) as http:
            assert http.post("/ui/login", data={"token": nodes.token}).status_code == 303
            overview = http.get("/ui").text
            assert '<td class="num" data-field="requests">8</td>' in overview, overview
            page = http.get("/ui/functions/hello").text
            assert '<span class="value" data-field="requests">8</span>' in page, page
            assert "<td>node1/" in page and "<td>node2/" in page, page

        # /metrics stays per node, each naming itself.
        headers = {"authorization": f"Bearer {nodes.token}"}
        for node in (first, second):
            scraped = node.http.get(f"{node.api_url}/metrics", headers=headers).text
            assert f'fissile_node_info{{node="{node.name}"}} 1.0' in scraped
