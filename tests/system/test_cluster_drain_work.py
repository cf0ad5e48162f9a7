"""A drained node takes no new background work: with two nodes, a timer firing every second and
an ``embedded`` MQ trigger (NATS JetStream), draining node2 leaves every slot and every message
to node1, each slot still fired once; resuming it gives it some again.

Which node ran a slot or a message is told by ``fissile fn logs -o json``, which tags every
line with the node whose instance printed it. Slow (marked): two nodes, ~20 timer slots.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from clusterkit import Cluster, Node, cluster
from syskit import wait_for, write

pytestmark = pytest.mark.slow

# Prints what ran (a timer's slot, or a message's body), then takes a moment, so a node busy
# with one message leaves the next to the other.
WORK = """
import time


def main(request):
    slot = request.headers.get("x-fissile-timer-slot")
    label = f"slot {slot}" if slot else f"message {request.text}"
    print("ran", label, flush=True)
    if not slot:
        time.sleep(0.3)
    return "ran " + label
"""


def ran(node: Node) -> list[tuple[str, str]]:
    """(what, node) for every run the function printed, on either node."""
    out = node.ok("fn", "logs", "--name", "work", "--tail", "100000", "-o", "json").out
    runs = []
    for line in out.splitlines():
        record = json.loads(line)
        message = str(record.get("message", ""))
        if record.get("level") == "STDOUT" and message.startswith("ran "):
            runs.append((message.removeprefix("ran "), str(record["node"])))
    return runs


def publish(node: Node, topic: str, body: str) -> None:
    response = node.http.post(
        f"{node.api_url}/v1/topics/{topic}/messages",
        params={"mqtype": "embedded"},
        content=body.encode(),
        headers={"authorization": f"Bearer {(node.data_dir / 'api-token').read_text().strip()}"},
    )
    assert response.status_code in (200, 201, 202), response.text


def consumer_state(node: Node) -> str:
    return str(node.json_of("mqt", "get", "--name", "jobs")["status"]["state"])


def slot_time(label: str) -> float:
    return datetime.fromisoformat(label.removeprefix("slot ")).timestamp()


def test_a_drained_node_claims_no_slot_and_fetches_no_message(tmp_path: Path) -> None:
    nodes: Cluster
    with cluster(tmp_path / "c", 2) as nodes:
        first, second = nodes.nodes
        write(tmp_path / "work.py", WORK)
        first.ok("fn", "create", "--name", "work", "--code", str(tmp_path / "work.py"))
        topic = f"jobs-{tmp_path.name[-12:]}"
        first.ok("mqt", "create", "--name", "jobs", "--function", "work", "--topic", topic)
        wait_for(lambda: consumer_state(second) == "running", 60, "node2 consuming")
        first.ok("timer", "create", "--name", "tick", "--function", "work", "--cron", "@every 1s")

        def handled(labels: set[str]) -> bool:
            return labels <= {what for what, _ in ran(first)}

        for n in range(6):
            publish(first, topic, f"before-{n}")
        wait_for(lambda: handled({f"message before-{n}" for n in range(6)}), 60, "first messages")

        first.ok("node", "drain", "node2")
        # Seen: node2's consumer let go of its subscription, its router forwards.
        wait_for(lambda: consumer_state(second) == "paused", 30, "node2's consumer paused")
        assert second.get("/function/work").headers.get("x-fissile-node") == "node1"
        drained_at = time.time()
        during = {f"message during-{n}" for n in range(12)}
        for n in range(12):
            publish(second, topic, f"during-{n}")  # through the drained node's API too

        def slots_since(moment: float) -> list[tuple[str, str]]:
            return [
                (what, node)
                for what, node in ran(first)
                if what.startswith("slot ") and slot_time(what) > moment
            ]

        wait_for(lambda: handled(during), 60, "the messages published during the drain")
        # Past the late claims' delay (3 s): a drained node would have fired by then.
        wait_for(lambda: len(slots_since(drained_at)) >= 8, 60, "8 slots during the drain")
        runs = ran(first)
        assert {node for what, node in runs if what in during} == {"node1"}, runs
        assert {node for _, node in slots_since(drained_at)} == {"node1"}, runs
        resumed_at = time.time()

        first.ok("node", "resume", "node2")
        wait_for(lambda: consumer_state(second) == "running", 30, "node2 consuming again")
        after: set[str] = set()
        batch = 0

        def node2_takes_some() -> bool:
            nonlocal batch
            # More messages each time: the two consumers share them.
            for n in range(6):
                label = f"after-{batch}-{n}"
                publish(first, topic, label)
                after.add(f"message {label}")
            batch += 1
            runs = ran(first)
            messages = {node for what, node in runs if what in after}
            slots = {node for what, node in runs if what.startswith("slot ")
                     and slot_time(what) > resumed_at}  # fmt: skip
            return "node2" in messages and "node2" in slots

        wait_for(node2_takes_some, 90, "node2 taking slots and messages again")
        wait_for(lambda: handled(after), 60, "every message after the resume")
        first.ok("timer", "delete", "--name", "tick")

        # Over the whole test, through the drain and the resume: each slot fired once, each
        # message handled once.
        counts = Counter(what for what, _ in ran(first) if what != "message ")
        assert max(counts.values()) == 1, [what for what, c in counts.items() if c > 1]
