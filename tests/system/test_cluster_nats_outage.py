"""A cluster node while NATS is away (docs/cluster.md, *When NATS goes away*): one node started
as a user would, its ``--nats`` pointed at a proxy to the NATS server on loopback that the test
takes down (connections cut, new ones refused) and brings back on the same port.

What the node's functions ran is counted by a small HTTP receiver on a loopback thread. Without
NATS or PostgreSQL the tests skip, except under CI=true. Slow (marked): a node's start
(10-25 s), an outage of ~8 s and the consumer's recovery.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from clusterkit import NATS, Cluster, Node, cluster, require_nats
from integration.brokerkit import Proxy
from pgkit import fresh_schema
from syskit import free_port, wait_for, write

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# Tells the receiver what ran; "slow..." bodies then take 2 s (so their ack falls in the outage).
WORK = """
import os
import time
import urllib.request


def main(request):
    label = request.text
    urllib.request.urlopen(
        urllib.request.Request(os.environ["COUNTER"], data=label.encode(), method="POST"),
        timeout=10,
    ).read()
    if label.startswith("slow"):
        time.sleep(2)
    return "ran " + label
"""

# context.publish of the body to TOPIC: what the function was told.
PUB = """
import os

from fissile.runtime.context import PlatformError


def main(request, context):
    try:
        context.publish(os.environ["TOPIC"], request.text)
    except PlatformError as exc:
        return "refused: " + str(exc)
    return "published"
"""


class Receiver:
    def __init__(self) -> None:
        self.labels: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                with receiver.lock:
                    receiver.labels.append(self.rfile.read(length).decode())
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def counts(self) -> Counter[str]:
        with self.lock:
            return Counter(self.labels)


class Outage:
    """brokerkit's Proxy on a loop of its own thread, on one port: ``down()`` cuts every
    connection and refuses new ones, ``up()`` listens again."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.proxy: Proxy | None = self._run(Proxy(target).start())
        assert self.proxy is not None
        self.port = self.proxy.port

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def down(self) -> None:
        if self.proxy is not None:
            self._run(self.proxy.close())
            self.proxy = None

    def up(self) -> None:
        self.proxy = self._run(Proxy(self.target).start(port=self.port))

    def close(self) -> None:
        self.down()
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.server.shutdown()
    started.server.server_close()


@pytest.fixture
def outage() -> Iterator[Outage]:
    require_nats()
    proxy = Outage(int(NATS.rpartition(":")[2]))
    yield proxy
    proxy.close()


def api_publish(node: Node, topic: str, body: str) -> tuple[int, dict[str, Any]]:
    token = (node.data_dir / "api-token").read_text().strip()
    response = node.http.post(
        f"{node.api_url}/v1/topics/{topic}/messages",
        params={"mqtype": "embedded"},
        content=body.encode(),
        headers={"authorization": f"Bearer {token}"},
    )
    return response.status_code, response.json()


def context_publish(node: Node, body: str) -> str:
    response = node.request("POST", "/function/pub", content=body.encode())
    assert response.status_code == 200, response.text
    return response.text


def test_a_node_rides_out_a_nats_outage(tmp_path: Path, outage: Outage, receiver: Receiver) -> None:
    topic = f"jobs-{tmp_path.name[-12:]}"
    with cluster(tmp_path, 1, "--nats", f"nats://127.0.0.1:{outage.port}") as running:
        (node,) = running.nodes
        write(tmp_path / "work.py", WORK)
        write(tmp_path / "pub.py", PUB)
        node.ok_many(
            ("fn", "create", "--name", "work", "--code", str(tmp_path / "work.py"),
             "--env-var", f"COUNTER={receiver.url}"),
            ("fn", "create", "--name", "pub", "--code", str(tmp_path / "pub.py"),
             "--env-var", f"TOPIC={topic}"),
        )  # fmt: skip
        node.ok(
            "mqt", "create", "--name", "jobs", "--function", "work", "--topic", topic,
            "--concurrency", "2",
        )  # fmt: skip
        expected = ["m0", "m1"]
        for label in expected:
            assert api_publish(node, topic, label)[0] == 202
        assert context_publish(node, "ctx-before") == "published"
        expected.append("ctx-before")
        wait_for(lambda: all(receiver.counts()[m] for m in expected), 90, "the first messages")
        # "slow" runs for 2 s from here: its ack is sent, and fails, while NATS is away.
        assert api_publish(node, topic, "slow")[0] == 202
        expected.append("slow")
        wait_for(lambda: receiver.counts()["slow"], 30, "the slow message taken")

        outage.down()
        cut = time.monotonic()
        # (b) Publishing: refused at once, with the reason; never a 202 for a message lost.
        # The node may need a moment to see its connection dead: a 202 before then is a
        # message NATS has, which must arrive.
        for n in range(200):
            status, answer = api_publish(node, topic, f"during{n}")
            if status != 202:
                break
            expected.append(f"during{n}")
            time.sleep(0.05)
        refused = f"during{n}"
        assert status == 502, answer
        assert answer["error"]["code"] == "broker_unavailable", answer
        assert "not connected" in answer["error"]["message"], answer
        told = context_publish(node, "ctx-during")
        assert told.startswith("refused: ") and "(502)" in told and "not connected" in told, told
        # (c) HTTP serving and async invocations go on.
        served = node.request("POST", "/function/work", content=b"http-during")
        assert (served.status_code, served.text) == (200, "ran http-during")
        accepted = node.request("POST", "/async-function/work", content=b"async-during")
        assert accepted.status_code == 202, accepted.text
        invocation = accepted.json()["id"]
        wait_for(
            lambda: node.get(f"/invocations/{invocation}").json()["status"] == "succeeded",
            60,
            "the async invocation succeeded",
        )
        # The consumer's client reconnects underneath: the trigger still says running.
        assert node.json_of("mqt", "get", "--name", "jobs")["status"]["state"] == "running"
        # Away for 10 s: past "slow"'s end and its ack's 5 s timeout, about ack_wait (10 s).
        time.sleep(max(0.0, 10 - (time.monotonic() - cut)))
        outage.up()

        # (a) The consumer goes on by itself; publishing works again.
        def published(label: str) -> bool:
            return api_publish(node, topic, label)[0] == 202

        wait_for(lambda: published("m2"), 30, "a publish accepted once NATS is back")
        assert context_publish(node, "ctx-after") == "published"
        expected += ["m2", "ctx-after"]
        wait_for(
            lambda: all(receiver.counts()[m] for m in expected),
            60,
            "every accepted message consumed after the outage",
        )
        time.sleep(1)  # room for a duplicate to show
        counts = receiver.counts()
        assert counts[refused] == 0 and counts["ctx-during"] == 0, counts
        # At least once, and only a delivery whose ack failed may come twice.
        assert all(counts[m] == 1 for m in expected if m != "slow"), counts
        assert counts["slow"] in (1, 2), counts
        jobs = node.json_of("mqt", "get", "--name", "jobs")
        assert jobs["status"]["state"] == "running", jobs
        # The failed ack said in one line; nothing else went wrong.
        assert "mq trigger jobs: message" in node.stderr(), node.stderr()
        assert "handled but not acked" in node.stderr(), node.stderr()
        assert "Traceback" not in node.stderr(), node.stderr()
        node.stop_cleanly()


def test_a_node_refuses_to_start_without_nats(tmp_path: Path) -> None:
    unreachable = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    with fresh_schema() as store:
        node = Cluster(tmp_path, store, secrets.token_urlsafe(32)).add(
            "--nats", unreachable, start=False
        )
        node.launch()
        assert node.process is not None
        try:
            code = node.process.wait(60)
        finally:
            node.abandon()
        assert code == 1
        assert f"cannot reach NATS at {unreachable}: " in node.stderr(), node.stderr()
        assert "Traceback" not in node.stderr(), node.stderr()
