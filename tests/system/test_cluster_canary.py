"""Canaries in a cluster (``clusterkit``): one node leads the canary controller and decides on
the requests every node's router served, once per interval; when the leader is killed another
node takes over and finishes the canary."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from clusterkit import Cluster, Node, cluster
from syskit import wait_for, write

pytestmark = pytest.mark.slow

VERSIONED = 'def main():\n    return "{version}"\n'
FAILING = 'def main():\n    return ("{version} failed", 500)\n'
LEADS = re.compile(r"canary controller: node (\w+) leads")


def leaders(nodes: list[Node]) -> list[str]:
    """Every node that took the lead so far, in the nodes' logs."""
    return [name for node in nodes for name in LEADS.findall(node.stderr())]


def the_leader(running: Cluster) -> tuple[Node, list[Node]]:
    (name,) = wait_for(lambda: leaders(running.nodes), 30, "a canary leader")
    leader = next(node for node in running.nodes if node.name == name)
    return leader, [node for node in running.nodes if node is not leader]


def functions(node: Node, tmp_path: Path, **versions: str) -> None:
    for name, code in versions.items():
        source = write(tmp_path / f"{name}.py", code.format(version=name))
        node.ok("fn", "create", "--name", name, "--code", str(source))


def canary(node: Node, name: str) -> dict[str, Any]:
    found: dict[str, Any] = node.json_of("canary", "get", "--name", name)
    return found


@contextmanager
def calling(nodes: list[Node], *paths: str) -> Iterator[Counter[str]]:
    """Call every path through every one of ``nodes``' routers in a loop while the block runs."""
    answers: Counter[str] = Counter()
    stop = threading.Event()

    def call(node: Node, path: str) -> None:
        with httpx.Client(base_url=node.router_url, timeout=30) as client:
            while not stop.is_set():
                try:
                    response = client.get(path)
                    answers[f"{node.name} {response.status_code} {response.text}"] += 1
                except httpx.HTTPError as exc:
                    answers[f"{node.name} {exc!r}"] += 1
                    stop.wait(0.05)
                stop.wait(0.01)

    callers = [
        threading.Thread(target=call, args=(node, path), daemon=True)
        for node in nodes
        for path in paths
    ]
    for caller in callers:
        caller.start()
    try:
        yield answers
    finally:
        stop.set()
        for caller in callers:
            caller.join(30)


def decisions(nodes: list[Node], name: str) -> list[str]:
    """The steps of canary ``name`` in every node's log, each as ``node: line``."""
    found = []
    for node in nodes:
        for line in node.stderr().splitlines():
            mine = f"canary {name}: " in line or f"canary {name} " in line
            if mine and "changed meanwhile" not in line:
                found.append(f"{node.name}: {line.split('fissile.canary: ', 1)[-1]}")
    return found


def test_one_leader_decides_on_the_requests_of_every_router(tmp_path: Path) -> None:
    with cluster(tmp_path / "c", 3) as running:
        leader, others = the_leader(running)
        functions(leader, tmp_path, old=VERSIONED, bad=FAILING, good=VERSIONED)
        for route, url in (("r-bad", "/bad"), ("r-good", "/good")):
            leader.ok("route", "create", "--name", route, "--url", url, "--function", "old")
        for node in others:
            wait_for(lambda n=node: n.get("/good").text == "old", 30, f"{node.name} serving")

        # Every request goes through the two routers that do not lead: the leader's own
        # counters see none of them.
        with calling(others, "/bad", "/good") as answers:
            for name, new, route in (("c-bad", "bad", "r-bad"), ("c-good", "good", "r-good")):
                leader.ok(
                    "canary", "create", "--name", name, "--httptrigger", route,
                    "--newfunction", new, "--oldfunction", "old",
                    "--increment-step", "50", "--increment-interval", "2s",
                    "--failure-threshold", "10",
                )  # fmt: skip
            for name in ("c-bad", "c-good"):
                wait_for(
                    lambda n=name: canary(others[0], n)["status"]["state"] != "pending",
                    90,
                    f"{name} decided",
                )
        for node in others:
            assert answers[f"{node.name} 500 bad failed"] > 0, answers  # tried on both
            assert answers[f"{node.name} 200 good"] > 0, answers

        bad = canary(others[1], "c-bad")["status"]
        assert (bad["state"], bad["weight"], bad["error_rate"]) == ("failed", 0, 100.0), bad
        assert bad["requests"] > 0, bad
        good = canary(others[1], "c-good")["status"]
        assert (good["state"], good["weight"], good["error_rate"]) == ("succeeded", 100, 0.0)
        assert good["requests"] > 0, good
        route = others[0].json_of("route", "get", "--name", "r-bad")
        assert route["function_weights"] == {"old": 100, "bad": 0}
        route = others[0].json_of("route", "get", "--name", "r-good")
        assert route["function_weights"] == {"old": 0, "good": 100}

        # One controller: one leader, and each decision made once, by it.
        assert leaders(running.nodes) == [leader.name]
        bad_steps = decisions(running.nodes, "c-bad")
        assert [line for line in bad_steps if "at 50%" in line] == [
            f"{leader.name}: canary c-bad: bad at 50%"
        ], bad_steps
        assert len([line for line in bad_steps if "failed" in line]) == 1, bad_steps
        assert all(line.startswith(f"{leader.name}: ") for line in bad_steps), bad_steps
        good_steps = decisions(running.nodes, "c-good")
        assert [line for line in good_steps if "at 50%" in line] == [
            f"{leader.name}: canary c-good: good at 50%"
        ], good_steps
        assert len([line for line in good_steps if "succeeded" in line]) == 1, good_steps
        assert all(line.startswith(f"{leader.name}: ") for line in good_steps), good_steps


def test_a_killed_leader_is_replaced_and_the_canary_finishes(tmp_path: Path) -> None:
    with cluster(tmp_path / "c", 3) as running:
        leader, others = the_leader(running)
        functions(others[0], tmp_path, v1=VERSIONED, v2=VERSIONED)
        others[0].ok("route", "create", "--name", "r", "--url", "/r", "--function", "v1")
        for node in others:
            wait_for(lambda n=node: n.get("/r").text == "v1", 30, f"{node.name} serving")

        with calling(others, "/r") as answers:
            others[0].ok(
                "canary", "create", "--name", "c", "--httptrigger", "r",
                "--newfunction", "v2", "--oldfunction", "v1",
                "--increment-step", "25", "--increment-interval", "2s",
            )  # fmt: skip
            wait_for(lambda: canary(others[0], "c")["status"]["weight"] >= 25, 60, "a step")
            assert leader.process is not None
            leader.process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            leader.process.wait(10)
            (successor,) = wait_for(lambda: leaders(others), 30, "another node taking the lead")
            taken = time.monotonic() - killed
            wait_for(
                lambda: canary(others[0], "c")["status"]["state"] != "pending",
                90,
                "the canary finished",
            )
        status = canary(others[1], "c")["status"]
        assert (status["state"], status["weight"]) == ("succeeded", 100), status
        assert others[1].json_of("route", "get", "--name", "r")["function_weights"] == {
            "v1": 0,
            "v2": 100,
        }
        assert not any("500" in answer or "Error" in answer for answer in answers), answers
        assert taken < 10, taken  # a few seconds: the lock goes with the dead session

        # Each weight decided once across the cluster: by the first leader, then by its
        # successor (a step the killed leader recorded is not taken again).
        steps = decisions(running.nodes, "c")
        for weight in (25, 50, 75):
            made = [line for line in steps if f"at {weight}%" in line and "stays" not in line]
            assert len(made) == 1, steps
        assert len([line for line in steps if "succeeded" in line]) == 1, steps
        assert next(line for line in steps if "succeeded" in line).startswith(successor)
        assert leaders(running.nodes) == [leader.name, successor]
