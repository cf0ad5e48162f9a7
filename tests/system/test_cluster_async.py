"""Async invocations, timers, the embedded MQ type and watches in a cluster: platforms started
as a user would
(``fissile up --store postgresql://...``) with their own data dirs and ports, sharing one fresh
PostgreSQL schema, one of them killed with SIGKILL mid-work.

What the functions did is counted by a small HTTP receiver on a loopback thread of this process
(instances share the host's network). Without PostgreSQL the tests skip, except under CI=true.
Slow (marked): each starts two or three platforms (10-25 s each); the async test waits out a
lease (10 s), the timer test ~20 slots. The MQ test also needs NATS on loopback.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pgkit import fresh_schema
from syskit import Platform, Spawn, wait_for, write

pytestmark = pytest.mark.slow

FINAL = {"succeeded", "failed", "timed_out", "cancelled", "dead"}

# Tells the receiver what ran (a timer's slot, else the body), then takes its time.
WORK = """
import os
import time
import urllib.request


def main(request):
    label = request.headers.get("x-fissile-timer-slot") or request.text
    urllib.request.urlopen(
        urllib.request.Request(os.environ["COUNTER"], data=label.encode(), method="POST"),
        timeout=10,
    ).read()
    time.sleep(float(request.query.get("s", os.environ.get("SLEEP", "0"))))
    return "ran " + label
"""


class Receiver:
    def __init__(self) -> None:
        self.labels: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                label = self.rfile.read(length).decode()
                with receiver.lock:
                    receiver.labels.append(label)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def counts(self) -> Counter[str]:
        with self.lock:
            return Counter(self.labels)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.close()


@pytest.fixture
def store_url() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


def cluster(
    spawn: Spawn, tmp_path: Path, url: str, size: int, start: int | None = None
) -> list[Platform]:
    """``size`` platforms' data dirs (``node0``, ``node1``...) on one store; the first
    ``start`` (all by default) started, two at a time.

    Their deploy and archive directories are one, shared: fetching a function's build from
    the node that made it is another part of cluster mode (issue 17, item 4), not tested here.
    """
    for what in ("deploy", "archives"):
        (tmp_path / f"shared-{what}").mkdir()
    for i in range(size):
        (tmp_path / f"node{i}").mkdir()
        for what in ("deploy", "archives"):
            (tmp_path / f"node{i}" / what).symlink_to(tmp_path / f"shared-{what}")
    with ThreadPoolExecutor(2) as pool:
        return list(
            pool.map(lambda i: spawn(tmp_path / f"node{i}", "--store", url), range(start or size))
        )


def create_work(platform: Platform, tmp_path: Path, receiver: Receiver, *more: str) -> None:
    write(tmp_path / "work.py", WORK)
    platform.ok(
        "fn", "create", "--name", "work", "--code", str(tmp_path / "work.py"),
        "--env-var", f"COUNTER={receiver.url}", *more,
    )  # fmt: skip


def serves(platform: Platform) -> bool:
    response = platform.request("POST", "/function/work", content=b"probe")
    return response.status_code == 200 and response.text == "ran probe"


def status_of(platform: Platform, invocation_id: str) -> dict[str, Any]:
    response = platform.get(f"/invocations/{invocation_id}")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def sse(platform: Platform, invocation_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of an invocation's event stream, read to its end."""
    import json

    events: list[tuple[str, dict[str, Any]]] = []
    url = f"{platform.router_url}/invocations/{invocation_id}/events"
    with httpx.Client(timeout=60) as client, client.stream("GET", url) as response:
        assert response.status_code == 200
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif fields:
                events.append((fields["event"], json.loads(fields["data"])))
                fields = {}
    return events


def test_sigkill_of_the_accepting_node_loses_no_invocation(
    spawn: Spawn, tmp_path: Path, store_url: str, receiver: Receiver
) -> None:
    first, second = cluster(spawn, tmp_path, store_url, 2)
    create_work(first, tmp_path, receiver, "--max-scale", "2")
    wait_for(lambda: serves(second) and serves(first), 60, "the function served by both nodes")

    total = 24
    ids: dict[str, str] = {}
    for n in range(total):
        response = first.request("POST", "/async-function/work?s=0.5", content=f"n{n}".encode())
        assert response.status_code == 202, response.text
        ids[response.json()["id"]] = f"n{n}"
    # Some ran on the accepting node; then it dies with the rest queued or running there.
    wait_for(lambda: sum(receiver.counts()[f"n{n}"] for n in range(total)) >= 3, 60, "3 runs")
    # A client follows the last one through the other node, from before the death to its end.
    last = list(ids)[-1]
    with ThreadPoolExecutor(1) as pool:
        streamed = pool.submit(sse, second, last)
        first.abandon()  # SIGKILL, then its instances
        events = streamed.result(timeout=90)
    assert events[-1][0] == "result" and events[-1][1]["status"] == "succeeded", events
    assert events[-1][1]["node"] == f"{_host()}-{second.pid}", events

    def finished() -> dict[str, dict[str, Any]] | None:
        documents = {i: status_of(second, i) for i in ids}
        return documents if all(d["status"] in FINAL for d in documents.values()) else None

    documents = wait_for(finished, 60, "every invocation final, through the surviving node")
    assert {d["status"] for d in documents.values()} == {"succeeded"}, documents
    for invocation_id in documents:
        result = second.get(f"/invocations/{invocation_id}/result")
        assert result.text == f"ran {ids[invocation_id]}"
    counts = receiver.counts()
    assert all(counts[label] >= 1 for label in ids.values())  # at least once
    nodes = Counter(d["node"] for d in documents.values())
    assert nodes[f"{_host()}-{second.pid}"] >= 1, nodes  # the dead node's work ran there
    second.stop_cleanly()


def test_a_timer_fires_once_per_slot_across_nodes_and_a_death(
    spawn: Spawn, tmp_path: Path, store_url: str, receiver: Receiver
) -> None:
    platforms = cluster(spawn, tmp_path, store_url, 3)
    create_work(platforms[0], tmp_path, receiver)
    wait_for(lambda: all(serves(p) for p in platforms), 60, "the function served everywhere")
    platforms[1].ok(
        "timer", "create", "--name", "tick", "--function", "work", "--cron", "@every 1s"
    )

    def slots() -> Counter[str]:
        return Counter({k: v for k, v in receiver.counts().items() if k != "probe"})

    wait_for(lambda: len(slots()) >= 8, 60, "8 slots fired")
    platforms[0].abandon()  # SIGKILL of the node the timer was created on
    before = len(slots())
    wait_for(lambda: len(slots()) >= before + 10, 60, "10 more slots after the death")
    platforms[2].ok("timer", "delete", "--name", "tick")
    fired = slots()
    assert max(fired.values()) == 1, [s for s, c in fired.items() if c > 1]  # never twice
    stamps = sorted(datetime.fromisoformat(s).timestamp() for s in fired)
    # Every slot from the first to the last, except at most the one claimed by the node that
    # died between its claim and its call (timers are at most once).
    span = round(stamps[-1] - stamps[0]) + 1
    assert len(stamps) >= span - 1, (span, stamps)
    for platform in platforms[1:]:
        platform.stop_cleanly()


def test_a_watch_is_called_once_per_event_across_nodes(
    spawn: Spawn, tmp_path: Path, store_url: str, receiver: Receiver
) -> None:
    import json

    first, second = cluster(spawn, tmp_path, store_url, 2)
    create_work(first, tmp_path, receiver)
    wait_for(lambda: serves(second) and serves(first), 60, "the function served by both nodes")
    second.ok("watch", "create", "--name", "w", "--function", "work", "--event", "function.*")
    write(tmp_path / "other.py", 'def main():\n    return "other"\n')
    first.ok("fn", "create", "--name", "other", "--code", str(tmp_path / "other.py"))
    second.ok("fn", "update", "--name", "other", "--code", str(tmp_path / "work.py"))
    first.ok("fn", "delete", "--name", "other")

    def events() -> list[tuple[str, int]]:
        found = []
        for label in receiver.counts().elements():
            if label.startswith("{"):
                event = json.loads(label)
                if event["data"]["function"] == "other":
                    found.append((event["type"], event["data"]["generation"]))
        return found

    # The delete comes last: each node delivers its events in order, so by the time the
    # delete's arrived, a second delivery of the others would have too.
    wait_for(lambda: ("function.deleted", 2) in events(), 60, "the delete's event")
    assert sorted(events()) == [
        ("function.created", 1),
        ("function.deleted", 2),
        ("function.updated", 2),
    ]
    second.stop_cleanly()
    first.stop_cleanly()


def require_nats() -> None:
    import os
    import socket

    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=2).close()
    except OSError as exc:
        reason = f"no NATS on 127.0.0.1:4222: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: NATS tests must run)", pytrace=False)
        pytest.skip(reason)


def test_embedded_mq_in_a_cluster_consumes_every_message_across_a_death(
    spawn: Spawn, tmp_path: Path, store_url: str, receiver: Receiver
) -> None:
    require_nats()
    # The second node starts only once the first holds deliveries, and the first dies right
    # after: what it held unacked must come again to the second (after ack_wait).
    (first,) = cluster(spawn, tmp_path, store_url, 2, start=1)
    create_work(first, tmp_path, receiver, "--env-var", "SLEEP=1.5")
    topic = f"jobs-{tmp_path.name[-12:]}"
    first.ok(
        "mqt", "create", "--name", "jobs", "--function", "work", "--topic", topic,
        "--concurrency", "2",
    )  # fmt: skip
    total = 24
    for n in range(total):
        publish(first, topic, f"m{n}")
    labels = [f"m{n}" for n in range(total)]
    wait_for(lambda: sum(receiver.counts()[m] for m in labels) >= 2, 60, "2 messages taken")
    second = spawn(tmp_path / "node1", "--store", store_url)
    wait_for(lambda: serves(second), 60, "the function served by the second node")
    first.abandon()  # SIGKILL, with deliveries in flight there
    assert sum(receiver.counts()[m] >= 1 for m in labels) < total  # work was left
    # Published through the survivor: the topic is the cluster's, not a node's.
    publish(second, topic, "late")
    labels.append("late")
    wait_for(
        lambda: all(receiver.counts()[m] >= 1 for m in labels),
        90,
        "every message consumed at least once by the surviving node",
    )
    second.stop_cleanly()


def publish(node: Platform, topic: str, body: str) -> None:
    token = (node.data_dir / "api-token").read_text().strip()
    response = node.http.post(
        f"{node.api_url}/v1/topics/{topic}/messages",
        params={"mqtype": "embedded"},
        content=body.encode(),
        headers={"authorization": f"Bearer {token}"},
    )
    assert response.status_code in (200, 201, 202), response.text


def _host() -> str:
    import socket

    return socket.gethostname()
