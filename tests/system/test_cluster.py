"""Three ``fissile up --cluster`` nodes on one machine sharing a PostgreSQL schema
(``clusterkit``): routes served by every node, builds fetched between nodes, ``node list``,
``node drain`` and the death of a node."""

from __future__ import annotations

import hashlib
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from clusterkit import cluster
from syskit import Platform, assert_one_line_error, wait_for, write

pytestmark = pytest.mark.slow

HELLO = 'def main():\n    return "Hello from the cluster"\n'
ECHO = (
    "from flask import request\n\n"
    "def main():\n"
    "    return request.get_data() + request.query_string\n"
)
SLOW = 'import time\n\ndef main():\n    time.sleep(3)\n    return "slow done"\n'


def test_a_function_created_on_one_node_answers_on_the_others(tmp_path: Path) -> None:
    with cluster(tmp_path / "c", 3) as nodes:
        first, second, third = nodes.nodes
        listed = first.nodes()
        assert sorted(listed) == ["node1", "node2", "node3"]
        for name, node in zip(("node1", "node2", "node3"), nodes.nodes, strict=True):
            assert listed[name]["address"] == f"127.0.0.1:{node.port}"
            assert listed[name]["state"] == "active"
            assert listed[name]["heartbeat_age"] < 4

        write(tmp_path / "hello.py", HELLO)
        first.ok("fn", "create", "--name", "hello", "--code", str(tmp_path / "hello.py"))
        first.ok("route", "create", "--function", "hello", "--url", "/hello")
        created = time.monotonic()
        answered: dict[str, float] = {}
        deadline = created + 10
        while len(answered) < 2 and time.monotonic() < deadline:
            for node in (second, third):
                if node.name not in answered:
                    response = node.get("/hello")
                    if response.status_code == 200:
                        assert response.text == "Hello from the cluster"
                        answered[node.name] = time.monotonic() - created
        assert sorted(answered) == ["node2", "node3"], answered
        assert max(answered.values()) < 1.0, answered

        # node1 built the package; node2 fetched the build by its sha256 and checked it.
        archives = list((second.data_dir / "artifacts").glob("*.tar"))
        assert len(archives) == 1, archives
        data = archives[0].read_bytes()
        assert hashlib.sha256(data).hexdigest() == archives[0].stem
        # (from node1, or from node3 if it fetched first and offered it on)
        assert re.search(r"build [0-9a-f]{12} fetched from node[13] ", second.stderr())
        assert re.search(r"build [0-9a-f]{12} fetched from node[12] ", third.stderr())
        assert "fetched from" not in first.stderr()
        # Built once: only node1 ran a build.
        assert "published" in first.stderr()
        for node in (second, third):
            assert not any((node.data_dir / "builds").iterdir())


def test_node_drain_finishes_in_flight_requests_and_moves_new_ones(tmp_path: Path) -> None:
    with cluster(tmp_path / "c", 3) as nodes:
        first, second, _ = nodes.nodes
        write(tmp_path / "slow.py", SLOW)
        write(tmp_path / "hello.py", HELLO)
        first.ok("fn", "create", "--name", "slow", "--code", str(tmp_path / "slow.py"))
        first.ok("fn", "create", "--name", "hello", "--code", str(tmp_path / "hello.py"))
        write(tmp_path / "echo.py", ECHO)
        first.ok("fn", "create", "--name", "echo", "--code", str(tmp_path / "echo.py"))
        assert second.get("/function/hello").status_code == 200

        slow: dict[str, httpx.Response] = {}

        def call_slow() -> None:
            slow["response"] = httpx.get(f"{second.router_url}/function/slow", timeout=60)

        caller = threading.Thread(target=call_slow)
        caller.start()
        wait_for(lambda: second.nodes()["node2"]["inflight"] >= 1, 30, "the slow call in flight")
        first.ok("node", "drain", "node2")
        assert first.nodes()["node2"]["state"] == "draining"

        # New requests to node2's router are served by the others...
        def moved() -> bool:
            response = second.get("/function/hello")
            return response.status_code == 200 and response.headers.get("x-fissile-node") in (
                "node1",
                "node3",
            )

        wait_for(moved, 30, "node2 forwarding new requests")
        for _ in range(5):
            response = second.get("/function/hello")
            assert response.status_code == 200
            assert response.headers["x-fissile-node"] in ("node1", "node3")
        # A body and a query cross the hop as the client sent them.
        body = bytes(range(256)) * 400
        echoed = second.request("POST", "/function/echo?q=1", content=body)
        assert echoed.status_code == 200, echoed.text
        assert echoed.content == body + b"q=1"
        assert echoed.headers["x-fissile-node"] in ("node1", "node3")
        # ...while the one in flight there finishes.
        caller.join(60)
        assert slow["response"].status_code == 200
        assert slow["response"].text == "slow done"
        assert "x-fissile-node" not in slow["response"].headers

        first.ok("node", "resume", "node2")
        wait_for(
            lambda: "x-fissile-node" not in second.get("/function/hello").headers,
            10,
            "node2 serving again",
        )


def test_kill_9_of_a_node_fails_only_requests_in_flight_on_it(tmp_path: Path) -> None:
    with cluster(tmp_path / "c", 3) as nodes:
        first, second, third = nodes.nodes
        write(tmp_path / "hello.py", HELLO)
        first.ok("fn", "create", "--name", "hello", "--code", str(tmp_path / "hello.py"))
        for node in nodes.nodes:
            assert node.get("/function/hello").status_code == 200
        # node2 forwards everything: its requests cross to node1 and node3 until node3 dies.
        first.ok("node", "drain", "node2")
        wait_for(
            lambda: "x-fissile-node" in second.get("/function/hello").headers, 30, "forwarding"
        )

        stop = threading.Event()
        failures: dict[str, int] = {"node1": 0, "node2": 0, "node3": 0}
        answers: dict[str, int] = {"node1": 0, "node2": 0, "node3": 0}

        def load(node_name: str, url: str) -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    try:
                        ok = client.get(f"{url}/function/hello").status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    if ok:
                        answers[node_name] += 1
                    else:
                        failures[node_name] += 1
                        if node_name == "node3":
                            time.sleep(0.05)  # its router is gone: do not spin

        threads = [
            threading.Thread(target=load, args=(node.name, node.router_url)) for node in nodes.nodes
        ]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: min(answers.values()) >= 20, 30, "load on every node")
            third.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            third.process.wait(10)  # type: ignore[union-attr]
            before = dict(answers)
            wait_for(
                lambda: (
                    answers["node1"] >= before["node1"] + 50
                    and answers["node2"] >= before["node2"] + 50
                ),
                30,
                "the others answering after the kill",
            )
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        # node2's one client had at most one request in flight to node3 when it died (a GET:
        # sent again to node1 by node2's router); the next ones went to node1.
        assert failures["node1"] == 0 and failures["node2"] <= 1, failures
        assert failures["node3"] > 0  # not a vacuous kill
        wait_for(lambda: first.nodes()["node3"]["state"] == "dead", 30, "node3 seen dead")
        assert second.nodes()["node3"]["state"] == "dead"


def test_max_scale_holds_across_the_cluster(tmp_path: Path) -> None:
    with cluster(tmp_path / "c", 3) as nodes:
        first = nodes.nodes[0]
        write(tmp_path / "slow.py", SLOW.replace("time.sleep(3)", "time.sleep(0.3)"))
        first.ok(
            "fn", "create", "--name", "capped", "--code", str(tmp_path / "slow.py"),
            "--max-scale", "4",
        )  # fmt: skip
        headers = {"authorization": f"Bearer {nodes.token}"}
        # One instance on each node first: every node then holds one and queues the rest
        # of its share, or forwards it, rather than racing for the last slot with nothing.
        for node in nodes.nodes:
            assert node.get("/function/capped").status_code == 200

        def running() -> dict[str, int]:
            counts = {}
            for node in nodes.nodes:
                status = node.http.get(f"{node.api_url}/v1/functions/capped", headers=headers)
                function = status.json()["status"]
                counts[node.name] = function["instances"]
            return counts

        stop = threading.Event()
        most: dict[str, object] = {"total": 0, "counts": {}}

        claimed: list[int] = []

        def sample() -> None:
            while not stop.is_set():
                counts = running()
                if sum(counts.values()) > int(str(most["total"])):
                    most.update(total=sum(counts.values()), counts=counts)
                # What the nodes claimed in the store, instances starting included.
                rows = first.http.get(f"{first.api_url}/v1/nodes", headers=headers).json()
                claimed.append(sum(row["functions"].get("capped", 0) for row in rows))

        statuses: list[int] = []

        def load(url: str) -> None:
            with httpx.Client(timeout=60) as client:
                for _ in range(10):
                    statuses.append(client.get(f"{url}/function/capped").status_code)

        sampler = threading.Thread(target=sample)
        sampler.start()
        clients = [
            threading.Thread(target=load, args=(node.router_url,))
            for node in nodes.nodes
            for _ in range(4)
        ]
        try:
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join(120)
        finally:
            stop.set()
            sampler.join(30)
        assert len(statuses) == 120
        assert statuses.count(200) == 120, sorted(set(statuses))
        # 12 clients wanted 12 instances: the cluster ran 4 at most, and did reach 4.
        assert most["total"] == 4, most
        assert max(claimed) <= 4, claimed
        listed = first.nodes()
        assert sum(node["functions"].get("capped", 0) for node in listed.values()) <= 4


def test_min_scale_is_kept_across_the_cluster_not_on_every_node(tmp_path: Path) -> None:
    with cluster(tmp_path / "c", 3) as nodes:
        first = nodes.nodes[0]
        write(tmp_path / "hello.py", HELLO)
        first.ok(
            "fn", "create", "--name", "warm", "--code", str(tmp_path / "hello.py"),
            "--min-scale", "2",
        )  # fmt: skip
        headers = {"authorization": f"Bearer {nodes.token}"}

        def running() -> int:
            total = 0
            for node in nodes.nodes:
                status = node.http.get(f"{node.api_url}/v1/functions/warm", headers=headers)
                total += status.json()["status"]["instances"]
            return total

        wait_for(lambda: running() == 2, 30, "two instances warm in the cluster")
        # Every node keeps checking its minimum (each reaper tick): none adds a third.
        watched_until = time.monotonic() + 3
        while time.monotonic() < watched_until:
            assert running() == 2


def test_a_single_node_says_it_is_not_a_cluster(platform: Platform) -> None:
    assert_one_line_error(platform.cli("node", "list"), "single node", "--cluster")
    assert_one_line_error(platform.cli("node", "drain", "x"), "single node")
