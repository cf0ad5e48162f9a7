"""Placement in a three-node cluster (``clusterkit``): a function whose traffic all arrives at
one node's router has its instances spread over the nodes once that node's are busy, within
``--max-scale`` across the cluster; a function one sequential client calls stays where its
cold start was."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from clusterkit import cluster
from syskit import wait_for, write

pytestmark = pytest.mark.slow

NAP = 'import time\n\ndef main():\n    time.sleep(0.2)\n    return "rested"\n'
HELLO = 'def main():\n    return "hello"\n'


def test_busy_instances_on_one_node_spread_the_next_ones_over_the_cluster(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path / "c", 3) as nodes:
        first = nodes.nodes[0]
        write(tmp_path / "nap.py", NAP)
        first.ok(
            "fn", "create", "--name", "nap", "--code", str(tmp_path / "nap.py"),
            "--max-scale", "6",
        )  # fmt: skip
        headers = {"authorization": f"Bearer {nodes.token}"}
        stop = threading.Event()
        held: list[dict[str, int]] = []  # each sample of the node rows: instances by node

        def sample() -> None:
            while not stop.is_set():
                rows = first.http.get(f"{first.api_url}/v1/nodes", headers=headers).json()
                held.append({row["name"]: row["functions"].get("nap", 0) for row in rows})

        answers: list[tuple[int, str]] = []  # (status, node that served it)

        def load() -> None:
            with httpx.Client(timeout=60) as client:
                for _ in range(15):
                    response = client.get(f"{first.router_url}/function/nap")
                    answers.append(
                        (response.status_code, response.headers.get("x-fissile-node", "node1"))
                    )

        sampler = threading.Thread(target=sample)
        sampler.start()
        clients = [threading.Thread(target=load) for _ in range(6)]
        try:
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join(120)
        finally:
            stop.set()
            sampler.join(30)
        assert len(answers) == 90
        assert Counter(status for status, _ in answers) == {200: 90}
        served = Counter(node for _, node in answers)
        # Every request reached node1's router only, and other nodes served some of them.
        assert len(served) >= 2 and served["node1"] > 0, served
        spread = max(sum(1 for count in sample.values() if count) for sample in held)
        assert spread >= 2, held
        # The cluster never held more than --max-scale instances (starting ones included).
        assert max(sum(sample.values()) for sample in held) <= 6, held


def test_a_single_sequential_client_stays_on_the_node_it_calls(tmp_path: Path) -> None:
    with cluster(tmp_path / "c", 3) as nodes:
        first = nodes.nodes[0]
        write(tmp_path / "hello.py", HELLO)
        first.ok("fn", "create", "--name", "hello", "--code", str(tmp_path / "hello.py"))
        with httpx.Client(timeout=30) as client:
            for _ in range(30):
                response = client.get(f"{first.router_url}/function/hello")
                assert response.status_code == 200
                # Served by node1's own instance: its cold start stayed local, and one
                # instance was always free for the next request.
                assert "x-fissile-node" not in response.headers
        listed = first.nodes()
        assert listed["node1"]["functions"] == {"hello": 1}
        assert not listed["node2"]["functions"] and not listed["node3"]["functions"]


def test_instances_kept_warm_are_spread_over_the_nodes(tmp_path: Path) -> None:
    with cluster(tmp_path / "c", 3) as nodes:
        first = nodes.nodes[0]
        write(tmp_path / "hello.py", HELLO)
        first.ok(
            "fn", "create", "--name", "warm", "--code", str(tmp_path / "hello.py"),
            "--min-scale", "3",
        )  # fmt: skip

        def held() -> dict[str, int]:
            return {name: row["functions"].get("warm", 0) for name, row in first.nodes().items()}

        wait_for(lambda: sum(held().values()) == 3, 30, "three instances warm in the cluster")
        # One on each node, and it stays so (every node checks its share each reaper tick).
        watched_until = time.monotonic() + 3
        while time.monotonic() < watched_until:
            assert held() == {"node1": 1, "node2": 1, "node3": 1}


def test_a_full_cluster_serves_what_it_placed_on_a_peer_that_found_it_full(
    tmp_path: Path,
) -> None:
    """Bursts at two nodes at once: node1's view may show the cluster under --max-scale when
    node3 has just taken the last slot (a cold start there), so the peer node1 places a
    request on finds it full and, holding no instance, refuses it (503 no_capacity). node1
    then serves it with its own busy instances: every request node1 received is answered."""
    with cluster(tmp_path / "c", 3) as nodes:
        first, _, third = nodes.nodes
        write(tmp_path / "nap.py", NAP.replace("0.2", "1.0"))
        rounds = 7
        for n in range(rounds):
            first.ok(
                "fn", "create", "--name", f"nap{n}", "--code", str(tmp_path / "nap.py"),
                "--max-scale", "3",
            )  # fmt: skip
        wait_for(lambda: third.get("/function/nap0").status_code == 200, 60, "nap0 on node3")
        statuses: list[int] = []
        failed: list[tuple[str, str | None, str]] = []  # (router, node that answered, body)

        def call(url: str) -> None:
            with httpx.Client(timeout=60) as client:
                response = client.get(url)
                statuses.append(response.status_code)
                if response.status_code != 200:
                    failed.append((url, response.headers.get("x-fissile-node"), response.text))

        for n in range(1, rounds):
            # node1 holds an instance (its cold start is not the race here, docs/cluster.md).
            assert first.get(f"/function/nap{n}").status_code == 200
            clients = [
                threading.Thread(target=call, args=(f"{node.router_url}/function/nap{n}",))
                for node in (first,) * 5 + (third,) * 2
            ]
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join(120)
        assert len(statuses) == 7 * (rounds - 1)
        # node1 answers every request it received; node3 may fail one of the requests queued
        # for its own cold start when it finds the cluster full (docs/cluster.md).
        assert not [f for f in failed if f[0].startswith(first.router_url)], failed
        assert Counter(statuses)[200] >= len(statuses) - rounds, failed
