"""Asynchronous invocations end to end: the 202 front door, workers with retries and dead
letters, cancelling, callbacks, retention, SSE and websocket push, large bodies, and accepted
work surviving a platform killed outright.

Most tests share the session's platform (functions created once, by the module fixture); those
that kill, stop or configure a platform run their own. Counting how often a function ran, and
receiving callbacks, is done by small HTTP servers on loopback threads of this process:
instances have private file systems but the host's network, so they can reach them.

Slow (marked): the SIGKILL test (~12 s: a backlog of 300+ invocations of 0.1 s on 4 instances,
run to the end after the restart) and the SIGTERM test (~9 s: the stop's 5 s grace for running
invocations, two platform starts).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.exceptions
import websockets.sync.client
from syskit import (
    Platform,
    Proc,
    Spawn,
    assert_one_line_error,
    error_of,
    process_table,
    spawned_by,
    wait_gone,
    write,
)

FINAL = {"succeeded", "failed", "timed_out", "cancelled", "dead"}
ACCEPTED_KEYS = {"id", "status", "status_url", "result_url", "events_url", "ws_url"}
ID = re.compile(r"[0-9a-f]{32}")

# -- loopback receivers --------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic() when it arrived


Answerer = Callable[[Received, int], tuple[int, bytes]]


class Receiver:
    """An HTTP server on a loopback thread: records every request and answers with what
    ``answer(request, nth_request_on_that_path)`` returns."""

    def __init__(self, answer: Answerer) -> None:
        self.received: list[Received] = []
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = Received(
                    "POST",
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                    time.monotonic(),
                )
                with owner._lock:
                    owner.received.append(request)
                    owner.hits[self.path] += 1
                    nth = owner.hits[self.path]
                status, body = answer(request, nth)
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def count(self, path: str) -> int:
        with self._lock:
            return self.hits[path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _count(request: Received, nth: int) -> tuple[int, bytes]:
    """Answers how many requests came for this path (a function's attempt number)."""
    return 200, str(nth).encode()


@pytest.fixture
def receivers() -> Iterator[Callable[[Answerer], Receiver]]:
    started: list[Receiver] = []

    def start(answer: Answerer) -> Receiver:
        started.append(Receiver(answer))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


# -- functions -----------------------------------------------------------------------------

ECHO = """
def main(request, context):
    return {
        "method": request.method,
        "path": request.path,
        "params": request.params,
        "query": request.query,
        "body": request.text,
        "id": context.invocation_id,
        "prefer": request.headers.get("prefer"),
        "forged": request.headers.get("x-fissile-forged"),
        "callback": request.headers.get("x-callback-url"),
    }
"""

CRASH = """
import os

def main(request):
    os._exit(3)
"""

# Crashes its instance on one input only.
POISON = """
import os

def main(request):
    if request.text == "poison":
        os._exit(4)
    return {"ok": request.text}
"""

SLEEPY = """
import time

def main(request):
    seconds = float(request.query.get("s", "0.5"))
    time.sleep(seconds)
    return {"slept": seconds}
"""

# Reports each attempt to the counter (keyed by the invocation id, which an asynchronous
# invocation keeps across its attempts), answers 503 until the attempt named in the query, and
# takes ``s`` seconds on its first attempt only (a run again after a restart is quick).
COUNTED = """
import os
import time
import urllib.request

def main(request, context):
    url = os.environ["COUNTER"] + "/" + context.invocation_id
    with urllib.request.urlopen(urllib.request.Request(url, data=b""), timeout=10) as answer:
        attempt = int(answer.read())
    if attempt < int(request.query.get("succeed_on", "1")):
        return {"attempt": attempt}, 503
    if attempt == 1:
        time.sleep(float(request.query.get("s", "0")))
    return {"attempt": attempt, "n": request.json()["n"] if request.body else None}
"""

MIRROR = """
def main(request):
    return request.body[::-1] + request.body, 200, {"x-mirrored": str(len(request.body))}
"""

ALWAYS_500 = """
def main(request):
    return {"broken": True}, 500
"""

REFUSE = """
def main(request):
    return {"refused": request.text}, 422
"""


@dataclass
class Functions:
    platform: Platform
    counter: Receiver


@pytest.fixture(scope="module")
def counter() -> Iterator[Receiver]:
    receiver = Receiver(_count)
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def fns(
    platform: Platform, counter: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Functions:
    work = tmp_path_factory.mktemp("async")
    sources = {
        "echo": ECHO,
        "sleepy": SLEEPY,
        "counted": COUNTED,
        "mirror": MIRROR,
        "always500": ALWAYS_500,
        "refuse": REFUSE,
        "crash": CRASH,
        "poison": POISON,
    }
    for name, text in sources.items():
        write(work / f"{name}.py", text)

    def create(name: str, source: str, *options: str) -> tuple[str, ...]:
        return ("fn", "create", "--name", name, "--code", str(work / f"{source}.py"), *options)

    platform.ok_many(
        create("as-echo", "echo"),
        create("as-sleepy", "sleepy", "--max-scale", "1"),
        create("as-hold", "sleepy", "--max-scale", "1"),
        create("as-cancel3", "counted", "--max-scale", "1", "--env-var", f"COUNTER={counter.url}"),
        create("as-neighbour", "sleepy"),
        create(
            "as-flaky", "counted", "--async-retries", "3", "--env-var", f"COUNTER={counter.url}"
        ),
        create("as-mirror", "mirror"),
        create("as-dead", "always500", "--async-retries", "2"),
        create("as-500", "always500"),
        create("as-refuse", "refuse", "--async-retries", "3"),
        create("as-slow", "sleepy", "--timeout", "1s"),
        create("as-crash", "crash"),
        create("as-poison", "poison", "--max-scale", "1"),
    )
    platform.ok(
        "route", "create", "--function", "as-echo", "--url", "/as-orders/{order}/items/{item}",
        "--method", "POST",
    )  # fmt: skip
    return Functions(platform, counter)


# -- helpers -------------------------------------------------------------------------------


def submit(
    platform: Platform,
    function: str,
    subpath: str = "",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> str:
    """POST /async-function/<function><subpath>: must be accepted; returns the id."""
    response = platform.request(
        "POST", f"/async-function/{function}{subpath}", content=body, headers=headers
    )
    return accepted(platform, response)


def accepted(platform: Platform, response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    document = response.json()
    assert set(document) == ACCEPTED_KEYS, document
    invocation_id: str = document["id"]
    assert ID.fullmatch(invocation_id), document
    assert document["status"] == "queued", document
    base = f"{platform.router_url}/invocations/{invocation_id}"
    ws = base.replace("http://", "ws://", 1)
    assert document["status_url"] == base
    assert document["result_url"] == f"{base}/result"
    assert document["events_url"] == f"{base}/events"
    assert document["ws_url"] == f"{ws}/ws"
    assert response.headers["location"] == f"/invocations/{invocation_id}"
    assert response.headers["preference-applied"] == "respond-async"
    return invocation_id


def status_of(platform: Platform, invocation_id: str) -> dict[str, Any]:
    response = platform.get(f"/invocations/{invocation_id}")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def wait_for(
    platform: Platform, invocation_id: str, statuses: set[str] = FINAL, timeout: float = 30.0
) -> dict[str, Any]:
    """Poll the invocation until its status is one of ``statuses``; returns its document."""
    deadline = time.monotonic() + timeout
    while True:
        document = status_of(platform, invocation_id)
        if document["status"] in statuses:
            return document
        assert time.monotonic() < deadline, f"still {document['status']}: {document}"
        time.sleep(0.02)


def control(platform: Platform, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request to the control API with the platform's token, as an operator's script."""
    token = (platform.data_dir / "api-token").read_text().strip()
    headers = {"authorization": f"Bearer {token}"}
    return platform.http.request(method, platform.api_url + path, headers=headers, **kwargs)


def body_of(document: dict[str, Any]) -> Any:
    response = document["response"]
    assert response is not None and response["body_encoding"] == "text", document
    return json.loads(response["body"])


# -- the front door ------------------------------------------------------------------------


def test_unknown_function_is_404_and_nothing_is_queued(fns: Functions) -> None:
    platform = fns.platform
    for response in (
        platform.request("POST", "/async-function/as-nope", content=b"x"),
        platform.request("POST", "/async-function/as-nope/sub/path"),
        platform.request("GET", "/function/as-nope", headers={"prefer": "respond-async"}),
    ):
        assert response.status_code == 404, response.text
        assert "location" not in response.headers
        assert error_of(response) == {
            "code": "function_not_found",
            "message": "function 'as-nope' not found",
        }
    assert control(platform, "GET", "/v1/invocations?function=as-nope").json() == []
    listed = platform.ok("invocation", "list", "--function", "as-nope", "-o", "json").out
    assert json.loads(listed) == []
    result = platform.cli("fn", "test", "--name", "as-nope", "--async")
    assert_one_line_error(result, "as-nope", "not found")
    assert result.out == ""


def test_unknown_invocation_is_404_everywhere(fns: Functions) -> None:
    platform = fns.platform
    missing = "0" * 32
    expected = {"code": "invocation_not_found", "message": f"invocation {missing!r} not found"}
    for method, path in (
        ("GET", f"/invocations/{missing}"),
        ("GET", f"/invocations/{missing}/result"),
        ("GET", f"/invocations/{missing}/events"),
        ("DELETE", f"/invocations/{missing}"),
    ):
        response = platform.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert error_of(response) == expected, (method, path)
    response = platform.request("POST", f"/invocations/{missing}")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, DELETE"
    response = platform.request("GET", f"/invocations/{missing}/other")
    assert response.status_code == 404
    assert error_of(response)["code"] == "no_route"
    for command in (("get", missing), ("wait", missing), ("cancel", missing)):
        assert_one_line_error(
            platform.cli("invocation", *command), f"invocation {missing!r} not found"
        )
    response = control(platform, "GET", "/v1/invocations?status=finished")
    assert response.status_code == 422, response.text
    result = platform.cli("invocation", "list", "--status", "finished")
    assert result.rc == 2 and "'finished' is not one of" in result.err, result


def test_prefer_respond_async_on_a_route_with_params(fns: Functions) -> None:
    platform = fns.platform
    response = platform.request(
        "POST",
        "/as-orders/17/items/b%20c?x=1",
        content=b"hello",
        headers={
            "Prefer": "respond-async, wait=10",
            "content-type": "text/plain",
            "x-fissile-forged": "by the client",
        },
    )
    invocation_id = accepted(platform, response)
    document = wait_for(platform, invocation_id)
    assert document["status"] == "succeeded", document
    assert document["result_url"] == f"{platform.router_url}/invocations/{invocation_id}/result"
    assert document["function"] == "as-echo"
    assert (document["method"], document["path"]) == ("POST", "/as-orders/17/items/b%20c?x=1")
    assert (document["attempts"], document["max_attempts"], document["error"]) == (1, 1, None)
    assert document["response"]["status"] == 200
    seen = body_of(document)
    assert seen == {
        "method": "POST",
        "path": "/as-orders/17/items/b%20c",
        "params": {"order": "17", "item": "b c"},
        "query": {"x": "1"},
        "body": "hello",
        "id": invocation_id,  # the function sees the asynchronous invocation's id
        "prefer": None,  # consumed by the router
        "forged": None,  # the platform's own headers cannot be set by a client
        "callback": None,
    }
    # Just what the same call made synchronously sees.
    direct = platform.request(
        "POST",
        "/as-orders/17/items/b%20c?x=1",
        content=b"hello",
        headers={"content-type": "text/plain"},
    ).json()
    assert {**direct, "id": invocation_id} == seen

    result = platform.get(f"/invocations/{invocation_id}/result")
    assert result.status_code == 200
    assert result.headers["content-type"] == "application/json"
    assert result.headers["x-fissile-invocation-status"] == "succeeded"
    assert result.json() == seen

    # Other preferences leave the call synchronous; respond-async works on /function/ too.
    minimal = platform.request("POST", "/as-orders/1/items/2", headers={"Prefer": "return=minimal"})
    assert (minimal.status_code, minimal.json()["params"]) == (200, {"order": "1", "item": "2"})
    response = platform.request(
        "PUT", "/function/as-echo/x", content=b"y", headers={"prefer": "RESPOND-ASYNC"}
    )
    other = wait_for(platform, accepted(platform, response))
    assert (other["status"], other["method"], body_of(other)["body"]) == ("succeeded", "PUT", "y")


def test_respond_async_in_a_second_prefer_header(fns: Functions) -> None:
    platform = fns.platform
    response = platform.request(
        "POST",
        "/function/as-echo",
        content=b"two",
        headers=[("prefer", "return=minimal"), ("prefer", "respond-async")],
    )
    document = wait_for(platform, accepted(platform, response))
    assert (document["status"], body_of(document)["body"]) == ("succeeded", "two")


def test_fn_test_async_prints_an_id_and_wait_exit_codes(fns: Functions) -> None:
    platform = fns.platform
    result = platform.ok("fn", "test", "--name", "as-echo", "--async", "-X", "POST", "-b", "hi")
    invocation_id = result.out.strip()
    assert ID.fullmatch(invocation_id) and result.out == f"{invocation_id}\n", result
    assert f"status: {platform.router_url}/invocations/{invocation_id}" in result.err, result

    waited = platform.cli("invocation", "wait", invocation_id, "-o", "json")
    assert waited.rc == 0, waited
    document = json.loads(waited.out)
    assert document["status"] == "succeeded"
    assert body_of(document)["body"] == "hi"
    # The alias and the table output.
    described = platform.ok("inv", "get", invocation_id).out
    assert re.search(r"^Status: +succeeded$", described, re.M), described
    assert re.search(r"^Response: +HTTP 200$", described, re.M), described

    # A function answering 4xx: failed, and wait exits 1 after describing it.
    refused = submit(platform, "as-refuse", body=b"nope")
    waited = platform.cli("invocation", "wait", refused)
    assert waited.rc == 1, waited
    assert re.search(r"^Status: +failed$", waited.out, re.M), waited
    assert re.search(r"^Attempts: +1 of 4$", waited.out, re.M), waited  # 4xx is not retried
    assert '{"refused": "nope"}' in waited.out, waited
    result = platform.get(f"/invocations/{refused}/result")
    assert (result.status_code, result.json()) == (422, {"refused": "nope"})
    assert result.headers["x-fissile-invocation-status"] == "failed"

    # Still running when wait gives up: exit 1 with one error line.
    slow = submit(platform, "as-neighbour", "?s=3")
    waited = platform.cli("invocation", "wait", slow, "--timeout", "0.3s")
    assert waited.rc == 1, waited
    lines = waited.err.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        rf"Error: invocation {slow} is still (queued|running) after 0\.3s", lines[0]
    ), waited
    assert "Traceback" not in waited.err


# -- cancelling ----------------------------------------------------------------------------


def test_cancel_queued_and_running(fns: Functions) -> None:
    platform = fns.platform
    running = submit(platform, "as-hold", "?s=30")
    queued = submit(platform, "as-hold", "?s=0")
    wait_for(platform, running, {"running"})
    assert status_of(platform, queued)["status"] == "queued"
    no_result = platform.get(f"/invocations/{running}/result")
    assert no_result.status_code == 409
    assert no_result.headers["retry-after"] == "1"
    assert error_of(no_result) == {
        "code": "no_result",
        "message": f"invocation {running} is running; no result yet",
    }

    # A queued one: it never runs.
    result = platform.ok("invocation", "cancel", queued)
    assert result.out == f"invocation {queued} cancelled\n"
    document = status_of(platform, queued)
    assert (document["status"], document["attempts"], document["error"]) == (
        "cancelled",
        0,
        "cancelled",
    )
    assert document["started_at"] is None and document["response"] is None
    no_result = platform.get(f"/invocations/{queued}/result")
    assert no_result.status_code == 409
    assert error_of(no_result)["code"] == "no_result"

    # A running one: its instance is killed, which frees the function's only slot; another
    # function's request in flight meanwhile is untouched.
    neighbour: list[httpx.Response] = []
    caller = threading.Thread(
        target=lambda: neighbour.append(platform.get("/function/as-neighbour?s=1"))
    )
    caller.start()
    deadline = time.monotonic() + 10
    while (hold := control(platform, "GET", "/v1/functions/as-hold").json()["status"])["busy"] < 1:
        assert time.monotonic() < deadline, hold
        time.sleep(0.02)
    [pid] = hold["pids"]
    instance = process_table()[pid]
    response = platform.request("DELETE", f"/invocations/{running}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    started = time.monotonic()
    again = platform.get("/function/as-hold?s=0")
    assert (again.status_code, again.json()) == (200, {"slept": 0.0})
    # Had the instance not been killed, this waited for the 30 s sleep.
    assert time.monotonic() - started < 10
    caller.join(30)
    assert [(r.status_code, r.json()) for r in neighbour] == [(200, {"slept": 1.0})]
    document = status_of(platform, running)
    assert (document["status"], document["attempts"], document["error"]) == (
        "cancelled",
        1,
        "cancelled",
    )
    assert document["response"] is None
    assert not wait_gone([instance]), "the cancelled invocation's instance lives on"
    status = control(platform, "GET", "/v1/functions/as-hold").json()["status"]
    assert pid not in status["pids"] and status["restarts"] == 0, status  # not a crash

    # Finished ones cannot be cancelled.
    response = platform.request("DELETE", f"/invocations/{running}")
    assert response.status_code == 409
    assert error_of(response) == {
        "code": "already_finished",
        "message": f"invocation {running} already finished (cancelled)",
    }
    done = submit(platform, "as-echo")
    wait_for(platform, done)
    result = platform.cli("invocation", "cancel", done)
    assert result.rc == 1, result
    assert result.err == f"Error: invocation {done} already finished (succeeded)\n", result


def test_cancels_are_not_crashes(fns: Functions) -> None:
    platform = fns.platform
    for _ in range(3):
        invocation_id = submit(platform, "as-cancel3", "?s=30")
        deadline = time.monotonic() + 10
        while fns.counter.count(f"/{invocation_id}") < 1:  # running in its instance
            assert time.monotonic() < deadline, status_of(platform, invocation_id)
            time.sleep(0.01)
        response = platform.request("DELETE", f"/invocations/{invocation_id}")
        assert (response.status_code, response.json()["status"]) == (200, "cancelled")
    time.sleep(0.2)  # the killed instance's exit is seen
    status = control(platform, "GET", "/v1/functions/as-cancel3").json()["status"]
    assert (status["restarts"], status["failures_in_a_row"]) == (0, 0), status
    response = platform.request("POST", "/function/as-cancel3")
    assert response.status_code == 200, response.text


def test_cancel_during_retry_back_off_streams_the_end(fns: Functions) -> None:
    platform = fns.platform
    invocation_id = submit(platform, "as-flaky", "?succeed_on=99")
    events: list[tuple[str, dict[str, Any]]] = []
    watcher = threading.Thread(target=lambda: events.extend(_sse(platform, invocation_id)))
    watcher.start()
    document = wait_for(platform, invocation_id, {"queued"} | FINAL)
    deadline = time.monotonic() + 10
    while document["attempts"] < 1 or document["status"] != "queued":  # backing off
        assert time.monotonic() < deadline, document
        document = status_of(platform, invocation_id)
    assert document["error"] == "the function answered 503"
    response = platform.request("DELETE", f"/invocations/{invocation_id}")
    assert response.status_code == 200
    document = response.json()
    assert (document["status"], document["attempts"], document["error"]) == (
        "cancelled",
        1,
        "cancelled",
    )
    watcher.join(10)
    assert not watcher.is_alive(), "the event stream did not end with the cancel"
    statuses = [(kind, event["status"]) for kind, event in events]
    assert statuses[-3:] == [("status", "running"), ("status", "queued"), ("result", "cancelled")]
    time.sleep(1.0)  # past the back-off (0.5 s): the attempt that was due never runs
    assert fns.counter.count(f"/{invocation_id}") == 1
    assert status_of(platform, invocation_id)["status"] == "cancelled"


# -- retries, dead letters, timeouts -------------------------------------------------------


def test_retries_then_dead_letter(fns: Functions) -> None:
    platform = fns.platform
    dead = submit(platform, "as-dead")
    document = wait_for(platform, dead, timeout=30)
    assert document["status"] == "dead", document
    assert (document["attempts"], document["max_attempts"]) == (3, 3)
    assert document["error"] == "the function answered 500"
    assert document["response"]["status"] == 500
    assert body_of(document) == {"broken": True}
    listed = json.loads(platform.ok("invocation", "list", "--status", "dead", "-o", "json").out)
    assert dead in [item["id"] for item in listed]
    assert {item["status"] for item in listed} == {"dead"}
    table = platform.ok("invocation", "list", "--status", "dead", "--function", "as-dead").out
    assert re.search(rf"^{dead} +as-dead +dead +3/3 +500 ", table, re.M), table
    # The raw result of a dead letter is the last response.
    result = platform.get(f"/invocations/{dead}/result")
    assert (result.status_code, result.json()) == (500, {"broken": True})
    assert result.headers["x-fissile-invocation-status"] == "dead"

    # Without retries, a 5xx fails at once.
    once = submit(platform, "as-500")
    document = wait_for(platform, once)
    assert (document["status"], document["attempts"], document["max_attempts"]) == (
        "failed",
        1,
        1,
    )
    # Retries set later apply to invocations accepted from then on.
    platform.ok("fn", "update", "--name", "as-500", "--async-retries", "1")
    twice = submit(platform, "as-500")
    document = wait_for(platform, twice)
    assert (document["status"], document["attempts"], document["max_attempts"]) == ("dead", 2, 2)
    listed = platform.json_of("invocation", "list", "--function", "as-500")
    assert [item["id"] for item in listed] == [twice, once]  # newest first
    listed = platform.json_of("inv", "list", "--function", "as-500", "--limit", "1")
    assert [item["id"] for item in listed] == [twice]
    listed = platform.json_of("inv", "list", "--function", "as-500", "--status", "failed")
    assert [item["id"] for item in listed] == [once]


def test_retries_until_success(fns: Functions) -> None:
    platform = fns.platform
    invocation_id = submit(platform, "as-flaky", "?succeed_on=3", body=b'{"n": 5}')
    document = wait_for(platform, invocation_id, timeout=30)
    assert document["status"] == "succeeded", document
    assert (document["attempts"], document["max_attempts"], document["error"]) == (3, 4, None)
    assert body_of(document) == {"attempt": 3, "n": 5}
    assert fns.counter.count(f"/{invocation_id}") == 3


def test_concurrency_is_honoured(fns: Functions) -> None:
    platform = fns.platform
    ids = [submit(platform, "as-sleepy", "?s=0.2") for _ in range(3)]
    documents = [wait_for(platform, invocation_id) for invocation_id in ids]
    assert {document["status"] for document in documents} == {"succeeded"}
    spans = sorted(
        (datetime.fromisoformat(d["started_at"]), datetime.fromisoformat(d["finished_at"]))
        for d in documents
    )
    # max-scale 1, concurrency 1: one after another.
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, spans


def test_crash_without_retries_fails(fns: Functions) -> None:
    platform = fns.platform
    invocation_id = submit(platform, "as-crash")
    document = wait_for(platform, invocation_id)
    assert (document["status"], document["attempts"], document["max_attempts"]) == (
        "failed",
        1,
        1,
    )
    assert document["error"] == "the instance of as-crash died: exited with status 3"
    response = platform.get(f"/invocations/{invocation_id}/result")
    assert response.status_code == 409
    assert error_of(response) == {
        "code": "no_result",
        "message": f"invocation {invocation_id} ended failed without a response:"
        " the instance of as-crash died: exited with status 3",
    }


def test_poison_invocations_do_not_fail_the_ones_behind(fns: Functions) -> None:
    platform = fns.platform
    poison = [submit(platform, "as-poison", body=b"poison") for _ in range(3)]
    good = [submit(platform, "as-poison", body=f"good{n}".encode()) for n in range(2)]
    for invocation_id in poison:
        document = wait_for(platform, invocation_id)
        assert (document["status"], document["error"]) == (
            "failed",
            "the instance of as-poison died: exited with status 4",
        )
    for n, invocation_id in enumerate(good):
        document = wait_for(platform, invocation_id, timeout=15)
        assert (document["status"], document["attempts"]) == ("succeeded", 1), document
        assert body_of(document) == {"ok": f"good{n}"}


def test_timeout_without_retries(fns: Functions) -> None:
    platform = fns.platform
    invocation_id = submit(platform, "as-slow", "?s=5")
    document = wait_for(platform, invocation_id, timeout=15)
    assert document["status"] == "timed_out", document
    assert (document["attempts"], document["max_attempts"]) == (1, 1)
    assert document["response"] is None
    assert document["error"] == "function as-slow did not answer within 1s; its instance was killed"
    result = platform.get(f"/invocations/{invocation_id}/result")
    assert result.status_code == 409
    error = error_of(result)
    assert error["code"] == "no_result"
    assert error["message"].startswith(f"invocation {invocation_id} ended timed_out"), error


# -- callbacks -----------------------------------------------------------------------------


def test_callback_retried_until_delivered(
    fns: Functions, receivers: Callable[[Answerer], Receiver]
) -> None:
    platform = fns.platform
    receiver = receivers(lambda request, nth: (500, b"down") if nth <= 2 else (204, b""))
    invocation_id = submit(
        platform,
        "as-echo",
        "/cb",
        body=b"call me",
        headers={"X-Callback-Url": f"{receiver.url}/hook?k=v"},
    )
    # While retrying, the record tells how delivery goes.
    deadline = time.monotonic() + 20
    while (status_of(platform, invocation_id).get("callback") or {}).get("attempts", 0) < 1:
        assert time.monotonic() < deadline, receiver.received
        time.sleep(0.01)
    assert status_of(platform, invocation_id)["callback"] == {
        "url": f"{receiver.url}/hook?k=v",
        "state": "pending",
        "attempts": 1,
        "error": "the receiver answered 500",
    }
    while receiver.count("/hook?k=v") < 3:
        assert time.monotonic() < deadline, receiver.received
        time.sleep(0.05)
    time.sleep(0.3)  # nothing more comes once delivered
    assert len(receiver.received) == 3
    result = platform.get(f"/invocations/{invocation_id}/result")
    for request in receiver.received:
        assert request.method == "POST"
        assert request.headers["x-fissile-invocation-id"] == invocation_id
        assert request.headers["x-fissile-invocation-status"] == "succeeded"
        assert request.headers["x-fissile-function"] == "as-echo"
        assert request.headers["x-fissile-response-status"] == "200"
        assert request.headers["content-type"] == "application/json"
        assert request.body == result.content
    seen = json.loads(result.content)
    assert (seen["body"], seen["path"], seen["id"], seen["callback"]) == (
        "call me",
        "/async-function/as-echo/cb",
        invocation_id,
        None,  # the callback URL is the platform's business, not the function's
    )
    # Back-off between deliveries: 0.5 s, then 1 s (each short of the next doubling).
    first, second, third = (request.at for request in receiver.received)
    assert 0.45 <= second - first < 1.0 and 0.95 <= third - second < 2.0, receiver.received

    document = json.loads(platform.ok("invocation", "get", invocation_id, "-o", "json").out)
    assert document["callback"] == {
        "url": f"{receiver.url}/hook?k=v",
        "state": "delivered",
        "attempts": 3,
        "error": None,
    }
    described = platform.ok("invocation", "get", invocation_id).out
    assert f"Callback: {receiver.url}/hook?k=v (delivered, 3 attempts)\n" in described, described


def test_callback_of_an_invocation_without_a_response(
    fns: Functions, receivers: Callable[[Answerer], Receiver]
) -> None:
    platform = fns.platform
    receiver = receivers(lambda request, nth: (200, b""))
    invocation_id = submit(platform, "as-crash", headers={"X-Callback-Url": receiver.url})
    document = wait_for(platform, invocation_id)
    assert (document["status"], document["attempts"], document["response"]) == ("failed", 1, None)
    error = "the instance of as-crash died: exited with status 3"
    assert document["error"] == error
    deadline = time.monotonic() + 10
    while not receiver.received:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    [request] = receiver.received
    assert request.headers["x-fissile-invocation-id"] == invocation_id
    assert request.headers["x-fissile-invocation-status"] == "failed"
    assert "x-fissile-response-status" not in request.headers
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {"error": {"code": "failed", "message": error}}
    while status_of(platform, invocation_id)["callback"]["state"] != "delivered":
        assert time.monotonic() < deadline, status_of(platform, invocation_id)
        time.sleep(0.02)


def test_callback_url_must_be_absolute_http(fns: Functions) -> None:
    platform = fns.platform
    for url in ("ftp://example/x", "/relative", "http://"):
        response = platform.request(
            "POST", "/async-function/as-echo", headers={"X-Callback-Url": url}
        )
        assert response.status_code == 400, response.text
        assert error_of(response) == {
            "code": "bad_callback_url",
            "message": f"X-Callback-Url must be an absolute http(s) URL, not {url!r}",
        }


def test_malformed_callback_urls_are_refused(spawn: Spawn, tmp_path: Path) -> None:
    platform = spawn()  # its own: a traceback in the shared platform's log fails the session
    write(tmp_path / "echo.py", ECHO)
    platform.ok("fn", "create", "--name", "echo", "--code", str(tmp_path / "echo.py"))
    for url in ("http://[::1/x", "http://h:0x/", "http://h:99999/", "ftp://example/x"):
        response = platform.request("POST", "/async-function/echo", headers={"X-Callback-Url": url})
        assert response.status_code == 400, (url, response.text)
        assert error_of(response)["code"] == "bad_callback_url", url
    assert control(platform, "GET", "/v1/invocations").json() == []
    platform.stop_cleanly()
    assert "Traceback" not in platform.stderr(), platform.stderr()[-5000:]


# -- push: SSE and websocket ---------------------------------------------------------------


def _sse(
    platform: Platform, invocation_id: str, headers: dict[str, str] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of the invocation's event stream, read to its end; each event's
    id is its kind (what a reconnecting EventSource sends back as Last-Event-ID)."""
    events: list[tuple[str, dict[str, Any]]] = []
    url = f"{platform.router_url}/invocations/{invocation_id}/events"
    with platform.http.stream("GET", url, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if fields:  # a blank line ends an event
                assert fields.get("id") == fields["event"], fields
                events.append((fields["event"], json.loads(fields["data"])))
                fields = {}
    return events


def test_sse_streams_status_then_result(fns: Functions) -> None:
    platform = fns.platform
    invocation_id = submit(platform, "as-sleepy", "?s=0.6")
    events = _sse(platform, invocation_id)
    kinds = [kind for kind, _ in events]
    statuses = [document["status"] for _, document in events]
    assert kinds[-1] == "result" and set(kinds[:-1]) == {"status"}, events
    assert statuses in (["queued", "running", "succeeded"], ["running", "succeeded"]), events
    assert body_of(events[-1][1]) == {"slept": 0.6}
    assert all(document["id"] == invocation_id for _, document in events)

    # Already finished: the result at once, and the stream ends.
    again = _sse(platform, invocation_id)
    assert [(kind, document["status"]) for kind, document in again] == [("result", "succeeded")]
    # An EventSource reconnecting after the result is told to stop; one that saw only a
    # status gets the result.
    url = f"/invocations/{invocation_id}/events"
    stop = platform.get(url, headers={"last-event-id": "result"})
    assert (stop.status_code, stop.content) == (204, b"")
    later = _sse(platform, invocation_id, {"last-event-id": "status"})
    assert [(kind, document["status"]) for kind, document in later] == [("result", "succeeded")]


def test_watchers_leaving_early_leave_the_invocation_alone(fns: Functions) -> None:
    platform = fns.platform
    invocation_id = submit(platform, "as-neighbour", "?s=1")
    wait_for(platform, invocation_id, {"running"})
    url = f"{platform.router_url}/invocations/{invocation_id}/events"
    with platform.http.stream("GET", url) as response:
        lines = response.iter_lines()
        assert next(lines) == "id: status"
        assert next(lines) == "event: status"
    ws_url = f"ws://127.0.0.1:{platform.port}/invocations/{invocation_id}/ws"
    with websockets.sync.client.connect(ws_url, open_timeout=10) as socket:
        message = json.loads(socket.recv(timeout=10))
        assert (message["event"], message["invocation"]["status"]) == ("status", "running")
    document = wait_for(platform, invocation_id)
    assert (document["status"], body_of(document)) == ("succeeded", {"slept": 1.0})
    # Whoever comes later still gets the result.
    assert [kind for kind, _ in _sse(platform, invocation_id)] == ["result"]


def test_websocket_pushes_status_then_result_then_closes(fns: Functions) -> None:
    platform = fns.platform
    invocation_id = submit(platform, "as-sleepy", "?s=0.6")
    ws_url = f"ws://127.0.0.1:{platform.port}/invocations/{invocation_id}/ws"
    messages = []
    with websockets.sync.client.connect(ws_url, open_timeout=10) as socket:
        with pytest.raises(websockets.exceptions.ConnectionClosedOK):
            while True:
                messages.append(json.loads(socket.recv(timeout=30)))
        assert socket.close_code == 1000
    events = [(m["event"], m["invocation"]["status"]) for m in messages]
    assert events in (
        [("status", "queued"), ("status", "running"), ("result", "succeeded")],
        [("status", "running"), ("result", "succeeded")],
    ), messages
    assert body_of(messages[-1]["invocation"]) == {"slept": 0.6}

    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        websockets.sync.client.connect(
            f"ws://127.0.0.1:{platform.port}/invocations/{'f' * 32}/ws", open_timeout=10
        )
    assert refused.value.response.status_code == 403
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        websockets.sync.client.connect(
            f"ws://127.0.0.1:{platform.port}/invocations/{invocation_id}/nope", open_timeout=10
        )
    assert refused.value.response.status_code == 403

    # Already finished: the result at once, then the close.
    with websockets.sync.client.connect(ws_url, open_timeout=10) as socket:
        message = json.loads(socket.recv(timeout=10))
        assert (message["event"], message["invocation"]["status"]) == ("result", "succeeded")
        with pytest.raises(websockets.exceptions.ConnectionClosedOK):
            socket.recv(timeout=10)
        assert socket.close_code == 1000


# -- large bodies --------------------------------------------------------------------------


def test_large_bodies_round_trip_through_files(fns: Functions) -> None:
    platform = fns.platform
    body = bytes(range(256)) * 400  # 100 KiB, not UTF-8
    bodies = platform.data_dir / "invocations"
    invocation_id = submit(platform, "as-mirror", body=body)
    document = wait_for(platform, invocation_id)
    assert document["status"] == "succeeded", document
    assert document["response"]["body_encoding"] == "base64"
    result = platform.get(f"/invocations/{invocation_id}/result")
    assert result.status_code == 200
    assert result.headers["content-type"] == "application/octet-stream"
    assert result.content == body[::-1] + body
    assert result.headers["x-mirrored"] == str(len(body))  # the function's own headers
    # The response lives in a file; the request's file went once the invocation finished.
    assert (bodies / f"{invocation_id}.response").stat().st_size == 2 * len(body)
    assert not (bodies / f"{invocation_id}.request").exists()

    # Queued behind a busy instance, the request waits in its file; a cancel removes it.
    blocker = submit(platform, "as-hold", "?s=1")
    queued = submit(platform, "as-hold", "?s=0", body=body)
    stored = bodies / f"{queued}.request"
    assert stored.read_bytes() == body
    assert platform.request("DELETE", f"/invocations/{queued}").status_code == 200
    assert not stored.exists()
    assert wait_for(platform, blocker)["status"] == "succeeded"


# -- a dedicated platform each -------------------------------------------------------------


def test_retention_expires_finished_records(
    spawn: Spawn, tmp_path: Path, receivers: Callable[[Answerer], Receiver]
) -> None:
    platform = spawn(None, "--retention", "1s")
    write(tmp_path / "mirror.py", MIRROR)
    platform.ok("fn", "create", "--name", "mirror", "--code", str(tmp_path / "mirror.py"))
    # A record whose callback is still being retried outlives the retention period.
    kept: list[int] = []

    def answer(request: Received, nth: int) -> tuple[int, bytes]:
        if nth < 3:
            return 500, b""
        # The 3rd delivery comes 1.5 s after the invocation ended, past the 1 s retention.
        kept.append(
            platform.get(f"/invocations/{request.headers['x-fissile-invocation-id']}").status_code
        )
        return 200, b""

    receiver = receivers(answer)
    with_callback = submit(platform, "mirror", body=b"cb", headers={"X-Callback-Url": receiver.url})
    body = b"r" * (70 * 1024)
    invocation_id = submit(platform, "mirror", body=body)
    document = wait_for(platform, invocation_id)
    assert document["status"] == "succeeded"
    stored = platform.data_dir / "invocations" / f"{invocation_id}.response"
    assert stored.exists()
    finished = time.monotonic()
    while platform.get(f"/invocations/{invocation_id}").status_code == 200:
        assert time.monotonic() - finished < 5, "the record outlived its retention"
        time.sleep(0.05)
    response = platform.get(f"/invocations/{invocation_id}/result")
    assert response.status_code == 404
    assert error_of(response)["code"] == "invocation_not_found"
    assert not stored.exists()
    assert control(platform, "GET", f"/v1/invocations/{invocation_id}").status_code == 404

    deadline = time.monotonic() + 10
    while platform.get(f"/invocations/{with_callback}").status_code == 200:
        assert time.monotonic() < deadline, status_of(platform, with_callback)
        time.sleep(0.05)
    assert kept == [200]  # still there at its delivery; gone once delivered
    platform.stop_cleanly()


def test_body_limit_applies_before_acceptance(spawn: Spawn, tmp_path: Path) -> None:
    platform = spawn(None, "--max-body", "100Ki")
    write(tmp_path / "mirror.py", MIRROR)
    platform.ok("fn", "create", "--name", "mirror", "--code", str(tmp_path / "mirror.py"))
    response = platform.request("POST", "/async-function/mirror", content=b"b" * (101 * 1024))
    assert response.status_code == 413
    assert error_of(response) == {
        "code": "body_too_large",
        "message": f"request body exceeds {100 * 1024} bytes",
    }
    assert control(platform, "GET", "/v1/invocations").json() == []
    invocation_id = submit(platform, "mirror", body=b"b" * (100 * 1024))
    assert wait_for(platform, invocation_id)["status"] == "succeeded"
    platform.stop_cleanly()


CRASH_TOTAL = 300
CRASH_AFTER = 40  # attempts begun when the platform is killed


class CrashingCounter:
    """Counts attempts per invocation; once every invocation is submitted and ``CRASH_AFTER``
    have begun, SIGKILLs the platform from inside the next new attempt's call, before
    answering it, so that attempt is surely cut off mid-run."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.submitted = threading.Event()
        self.killed = threading.Event()
        self.children: list[Proc] = []
        self.started: set[str] = set()

    def __call__(self, request: Received, nth: int) -> tuple[int, bytes]:
        if nth == 1:
            self.started.add(request.path)
            ready = self.submitted.is_set() and len(self.started) > CRASH_AFTER
            if ready and not self.killed.is_set():
                self.killed.set()
                self.children.extend(self.platform.children())
                os.kill(self.platform.pid, signal.SIGKILL)
        return 200, str(nth).encode()


# Slow (about 11 s): 300+ invocations of 0.1 s on 4 instances, twice a platform start.
@pytest.mark.slow
def test_accepted_invocations_survive_sigkill(
    spawn: Spawn, tmp_path: Path, receivers: Callable[[Answerer], Receiver]
) -> None:
    data_dir = tmp_path / "data"
    first = spawn(data_dir)
    crash = CrashingCounter(first)
    counter = receivers(crash)
    write(tmp_path / "work.py", COUNTED)
    first.ok(
        "fn", "create", "--name", "work", "--code", str(tmp_path / "work.py"),
        "--max-scale", "4", "--env-var", f"COUNTER={counter.url}",
    )  # fmt: skip

    def one(n: int) -> tuple[str, int]:
        # Every tenth body is over 64 KiB: it waits in a file, which must survive too.
        padding = "x" * (70 * 1024) if n % 10 == 0 else ""
        body = json.dumps({"n": n, "padding": padding}).encode()
        return submit(first, "work", "?s=0.1", body=body), n

    with ThreadPoolExecutor(8) as pool:  # clients in parallel
        ids = dict(pool.map(one, range(CRASH_TOTAL)))
    assert len(ids) == CRASH_TOTAL  # distinct ids
    # A client goes on submitting until the kill cuts it off: every 202 it got must hold.
    late: dict[str, int] = {}

    def keep_submitting() -> None:
        with httpx.Client(timeout=10) as client:
            for n in itertools.count(CRASH_TOTAL):
                body = json.dumps({"n": n}).encode()
                try:
                    response = client.post(
                        f"{first.router_url}/async-function/work?s=0.1", content=body
                    )
                except httpx.HTTPError:
                    return
                assert response.status_code == 202, response.text
                late[response.json()["id"]] = n
                if len(late) == 5:
                    crash.submitted.set()  # the kill may come from now on

    # The kill comes with the first attempt begun once the submitter has had 5 answers (and
    # CRASH_AFTER attempts have begun, so some finished before it).
    deadline = time.monotonic() + 30
    while len(crash.started) < CRASH_AFTER:
        assert time.monotonic() < deadline, "the backlog does not move"
        time.sleep(0.01)
    submitter = threading.Thread(target=keep_submitting)
    submitter.start()
    assert first.process is not None
    first.process.wait(60)
    submitter.join(10)
    assert not submitter.is_alive()
    ids.update(late)
    assert crash.killed.is_set(), "the platform finished before it was killed"
    assert first.process.returncode == -signal.SIGKILL
    assert len(crash.started) < CRASH_TOTAL // 2, "too little backlog left at the kill"
    assert 5 <= len(late) < 200, "the kill came late"
    # Its zygotes and instances (some mid-request) die with it.
    assert any(p.comm.startswith("fi-") for p in crash.children), crash.children
    assert not wait_gone(crash.children, 5.0)
    assert not spawned_by(first.pid)
    stored = {path.stem for path in (data_dir / "invocations").glob("*.request")}
    assert stored and stored <= set(ids), stored

    restarted = datetime.now(UTC)
    second = spawn(data_dir)
    deadline = time.monotonic() + 90
    while True:
        records = control(second, "GET", "/v1/invocations?function=work&limit=10000").json()
        if all(record["status"] in FINAL for record in records):
            break
        assert time.monotonic() < deadline, Counter(r["status"] for r in records)
        time.sleep(0.2)
    by_id = {record["id"]: record for record in records}
    assert set(ids) <= set(by_id), "accepted invocations lost"
    # At most the one in flight at the kill was stored without its 202 reaching the client.
    unanswered = set(by_id) - set(ids)
    assert len(unanswered) <= 1, unanswered
    for invocation_id in unanswered:
        assert by_id[invocation_id]["status"] == "succeeded"
    for invocation_id, n in ids.items():
        record = by_id[invocation_id]
        assert record["status"] == "succeeded", record
        assert record["attempts"] == 1, record  # the interrupted attempt does not count
        assert body_of(record)["n"] == n, record
    for invocation_id in list(ids)[:: CRASH_TOTAL // 10]:
        result = second.get(f"/invocations/{invocation_id}/result")
        assert (result.status_code, result.json()["n"]) == (200, ids[invocation_id])

    assert not list((data_dir / "invocations").glob("*.request"))
    # The backlog resumed in the order it was accepted.
    resumed = sorted(
        (record["created_at"], datetime.fromisoformat(record["started_at"]))
        for record in records
        if datetime.fromisoformat(record["started_at"]) > restarted
    )
    assert len(resumed) >= CRASH_TOTAL // 2
    starts = [started for _, started in resumed]
    assert starts == sorted(starts)

    runs = Counter(counter.hits[f"/{invocation_id}"] for invocation_id in ids)
    # Every one ran; only those cut off mid-run (at most the 4 instances' worth) ran twice.
    assert set(runs) <= {1, 2}, runs
    assert 1 <= runs[2] <= 4, runs
    print(f"\n{len(ids)} accepted ({len(late)} while it was killed); {runs[2]} ran twice")
    second.stop_cleanly()


class Watchers:
    """An event stream and a websocket open on one invocation, each on a thread; ``ended``
    says how each one ended."""

    def __init__(self, platform: Platform, invocation_id: str) -> None:
        self.platform = platform
        self.invocation_id = invocation_id
        self.ended: list[str] = []
        self.connected = threading.Semaphore(0)
        self.threads = [
            threading.Thread(target=self._events),
            threading.Thread(target=self._socket),
        ]
        for thread in self.threads:
            thread.start()
        for _ in self.threads:
            assert self.connected.acquire(timeout=10), "a watcher did not connect"

    def _events(self) -> None:
        url = f"{self.platform.router_url}/invocations/{self.invocation_id}/events"
        last = None
        try:
            with httpx.stream("GET", url, timeout=60) as response:
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        if last is None:
                            self.connected.release()
                        last = line[len("event: ") :]
            self.ended.append(f"sse {last}")
        except httpx.HTTPError as exc:
            self.ended.append(f"sse {exc!r}")

    def _socket(self) -> None:
        url = f"ws://127.0.0.1:{self.platform.port}/invocations/{self.invocation_id}/ws"
        try:
            with websockets.sync.client.connect(url, open_timeout=10) as socket:
                socket.recv(timeout=10)
                self.connected.release()
                while True:
                    socket.recv(timeout=60)
        except websockets.exceptions.ConnectionClosed as exc:
            self.ended.append(f"ws {exc.rcvd.code if exc.rcvd else None}")

    def join(self) -> list[str]:
        for thread in self.threads:
            thread.join(10)
        return sorted(self.ended)


# Slow (about 8 s): the stop's 5 s grace for running invocations, two platform starts.
@pytest.mark.slow
def test_sigterm_leaves_unfinished_invocations_to_the_next_start(
    spawn: Spawn, tmp_path: Path, receivers: Callable[[Answerer], Receiver]
) -> None:
    data_dir = tmp_path / "data"
    first = spawn(data_dir)
    counter = receivers(_count)
    write(tmp_path / "work.py", COUNTED)
    first.ok(
        "fn", "create", "--name", "work", "--code", str(tmp_path / "work.py"),
        "--max-scale", "2", "--env-var", f"COUNTER={counter.url}",
    )  # fmt: skip
    short = submit(first, "work", "?s=1", body=b'{"n": 1}')  # ends within the stop's grace
    long = submit(first, "work", "?s=60", body=b'{"n": 2}')  # cut off by the stop
    queued = submit(first, "work", "?s=0", body=b'{"n": 3}')  # never started
    wait_for(first, short, {"running"})
    wait_for(first, long, {"running"})
    assert status_of(first, queued)["status"] == "queued"
    watchers = Watchers(first, long)
    started = time.monotonic()
    first.stop_cleanly()
    # Watchers do not hold up the stop (the drain would wait 30 s for an open stream): the
    # stream ends with an event saying so, the websocket goes away; the attempt still running
    # after the 5 s grace is cut off without an error.
    assert time.monotonic() - started < 10
    assert watchers.join() == ["sse closing", "ws 1001"]
    assert "Traceback" not in first.stderr(), first.stderr()[-5000:]

    second = spawn(data_dir)
    documents = {i: wait_for(second, i, timeout=30) for i in (short, long, queued)}
    for invocation_id, n in ((short, 1), (long, 2), (queued, 3)):
        document = documents[invocation_id]
        assert document["status"] == "succeeded", document
        assert document["attempts"] == 1, document
        assert body_of(document)["n"] == n
    runs = {i: counter.count(f"/{i}") for i in (short, long, queued)}
    assert runs == {short: 1, long: 2, queued: 1}
    second.stop_cleanly()
    assert "Traceback" not in second.stderr(), second.stderr()[-5000:]


class KillingReceiver:
    """A callback receiver that SIGKILLs the platform when the first delivery arrives, before
    answering it; later deliveries are answered 200."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.children: list[Proc] = []

    def __call__(self, request: Received, nth: int) -> tuple[int, bytes]:
        if nth == 1:
            self.children.extend(self.platform.children())
            os.kill(self.platform.pid, signal.SIGKILL)
            return 500, b""
        return 200, b""


def test_callback_pending_at_a_crash_is_delivered_after_restart(
    spawn: Spawn, tmp_path: Path, receivers: Callable[[Answerer], Receiver]
) -> None:
    data_dir = tmp_path / "data"
    first = spawn(data_dir)
    killer = KillingReceiver(first)
    receiver = receivers(killer)
    write(tmp_path / "echo.py", ECHO)
    first.ok("fn", "create", "--name", "echo", "--code", str(tmp_path / "echo.py"))
    invocation_id = submit(
        first, "echo", body=b"keep me", headers={"X-Callback-Url": f"{receiver.url}/hook"}
    )
    assert first.process is not None
    first.process.wait(30)
    assert first.process.returncode == -signal.SIGKILL
    assert not wait_gone(killer.children, 5.0)
    assert not spawned_by(first.pid)

    second = spawn(data_dir)
    deadline = time.monotonic() + 20
    while (document := status_of(second, invocation_id))["callback"]["state"] == "pending":
        assert time.monotonic() < deadline, document
        time.sleep(0.05)
    assert document["status"] == "succeeded"
    assert document["callback"]["state"] == "delivered", document
    # Delivered at least once: the attempt the crash cut off, then the one after the restart.
    assert receiver.count("/hook") == 2
    assert document["callback"]["attempts"] == 1  # the cut-off attempt had no outcome
    first_try, delivered = receiver.received
    assert delivered.body == first_try.body
    assert json.loads(delivered.body)["body"] == "keep me"
    assert delivered.headers["x-fissile-invocation-status"] == "succeeded"
    second.stop_cleanly()
