"""fissile/router/protocol.py: the router's HTTP/1.1 protocol in a real uvicorn server on
loopback, in front of a real executor, driven over raw sockets (keep-alive, pipelining, the
hand-over to uvicorn's protocol, refusals, timeouts, graceful stop)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httptools
import pytest
from intkit import Harness, QuietServer, serving, until

from fissile.models import HTTPTriggerSpec
from fissile.router import Router, RouterProtocol

ECHO = """
import json, os, time

def main(request):
    if request.query.get("sleep"):
        time.sleep(float(request.query["sleep"]))
    if request.query.get("exit"):
        os._exit(int(request.query["exit"]))
    return {"method": request.method, "path": request.path, "body": request.text,
            "params": request.params, "id": request.headers.get("x-fissile-invocation-id")}
"""


class Served:
    def __init__(self, harness: Harness, server: QuietServer, port: int) -> None:
        self.harness = harness
        self.server = server
        self.port = port

    async def connect(self) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return Client(reader, writer)


class Response:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """A raw HTTP/1.1 client: requests are written as given, responses parsed in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.done: list[Response] = []
        self.current = Response()
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.current.body += body

    def on_message_complete(self) -> None:
        self.current.status = self.parser.get_status_code()
        self.done.append(self.current)
        self.current = Response()

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def responses(self, count: int, timeout: float = 10.0) -> list[Response]:
        async with asyncio.timeout(timeout):
            while len(self.done) < count:
                data = await self.reader.read(65536)
                if not data:
                    break
                self.parser.feed_data(data)
        got, self.done = self.done[:count], self.done[count:]
        return got

    async def closed(self, timeout: float = 5.0) -> bool:
        async with asyncio.timeout(timeout):
            while True:
                data = await self.reader.read(65536)
                if not data:
                    return True
                self.parser.feed_data(data)

    def close(self) -> None:
        self.writer.close()


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: router.test\r\n{extra}\r\n".encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: router.test\r\ncontent-length: {len(body)}\r\n"
    return (head + extra + "\r\n").encode() + body


@pytest.fixture
async def served(harness: Harness) -> AsyncIterator[Served]:
    harness.function("echo", ECHO, timeout=2)
    harness.store.create(
        "httptriggers",
        "items",
        HTTPTriggerSpec(
            name="items", function="echo", url="/items/{id}", methods=["GET", "POST"]
        ).model_dump(mode="json"),
    )
    router = Router(harness.executor, max_body=1000)
    router.follow(harness.store)
    options = {"timeout_keep_alive": 1, "timeout_graceful_shutdown": 5}
    async with serving(router, RouterProtocol, **options) as (server, port):
        yield Served(harness, server, port)


async def test_keep_alive_requests_are_served_on_one_connection(served: Served) -> None:
    client = await served.connect()
    client.send(get("/items/7"))
    [first] = await client.responses(1)
    client.send(post("/function/echo/sub", b"payload"))
    [second] = await client.responses(1)
    assert first.status == 200 and first.json()["params"] == {"id": "7"}
    assert second.json()["body"] == "payload" and second.json()["path"] == "/function/echo/sub"
    assert first.json()["id"] != second.json()["id"]
    assert first.headers["content-length"] == str(len(first.body))
    client.close()


async def test_pipelined_requests_are_answered_in_order(served: Served) -> None:
    client = await served.connect()
    client.send(b"".join(get(f"/items/{n}") for n in range(5)))
    responses = await client.responses(5)
    assert [r.json()["params"]["id"] for r in responses] == [str(n) for n in range(5)]
    client.close()


async def test_other_requests_go_to_the_asgi_router_on_the_same_connection(
    served: Served,
) -> None:
    client = await served.connect()
    # Fast, then the router's own answers (through uvicorn's protocol), then fast again: all
    # pipelined in one packet, answered in order.
    client.send(
        get("/items/1")
        + get("/nowhere")
        + b"DELETE /items/2 HTTP/1.1\r\nhost: x\r\n\r\n"
        + post("/function/missing", b"x")
        + b"HEAD /items/3 HTTP/1.1\r\nhost: x\r\n\r\n"
    )
    # HEAD's response has a content-length but no body: read it separately.
    ok, nowhere, delete, missing = await client.responses(4)
    assert ok.status == 200
    assert (nowhere.status, json.loads(nowhere.body)["error"]["code"]) == (404, "no_route")
    assert (delete.status, delete.headers["allow"]) == (405, "GET, POST")
    assert missing.status == 404
    client.parser.set_dangerous_leniencies(lenient_data_after_close=True)
    client.send(post("/items/4", b"after"))
    client.done.clear()
    data = await asyncio.wait_for(client.reader.read(65536), 5)
    while b"after" not in data:
        data += await asyncio.wait_for(client.reader.read(65536), 5)
    assert data.startswith(b"HTTP/1.1 200")  # HEAD: headers only
    assert b'"body": "after"' in data
    client.close()


async def test_body_over_the_limit_is_refused_with_413(served: Served) -> None:
    client = await served.connect()
    client.send(post("/function/echo", b"x" * 1001))
    [refused] = await client.responses(1)
    assert refused.status == 413 and refused.json()["error"]["code"] == "body_too_large"
    assert refused.headers["connection"] == "close"
    assert await client.closed()
    # Chunked: refused once the chunks pass the limit.
    client = await served.connect()
    head = b"POST /function/echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    client.send(head + b"".join(b"190\r\n" + b"y" * 400 + b"\r\n" for _ in range(3)))
    [refused] = await client.responses(1)
    assert refused.status == 413
    # On a connection uvicorn's protocol serves, the ASGI router answers it, in order.
    client = await served.connect()
    client.send(get("/nowhere") + post("/function/echo", b"z" * 2000))
    nowhere, refused = await client.responses(2)
    assert (nowhere.status, refused.status) == (404, 413)
    assert refused.json()["error"]["code"] == "body_too_large"
    # The server kept serving.
    client = await served.connect()
    client.send(post("/function/echo", b"x" * 1000))
    [fine] = await client.responses(1)
    assert fine.json()["body"] == "x" * 1000


async def test_malformed_request_gets_400_and_the_connection_closes(served: Served) -> None:
    client = await served.connect()
    client.send(b"GET /items/1 HTTP/1.1\r\nbad header line\r\n\r\n")
    [bad] = await client.responses(1)
    assert bad.status == 400 and bad.json()["error"]["code"] == "bad_request"
    assert await client.closed()


async def test_chunked_body_and_expect_continue(served: Served) -> None:
    client = await served.connect()
    client.send(
        b"POST /items/9 HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    interim = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    client.send(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    [done] = await client.responses(1)
    assert done.json()["body"] == "abcde"


async def test_connection_close_and_http_1_0(served: Served) -> None:
    client = await served.connect()
    client.send(get("/items/1", "connection: close\r\n"))
    [answer] = await client.responses(1)
    assert answer.status == 200 and answer.headers["connection"] == "close"
    assert await client.closed()
    client = await served.connect()
    client.send(b"GET /items/2 HTTP/1.0\r\n\r\n")
    [answer] = await client.responses(1)
    assert answer.status == 200 and answer.json()["params"] == {"id": "2"}
    assert await client.closed()


async def test_idle_connections_are_closed_after_the_keep_alive_timeout(
    served: Served,
) -> None:
    client = await served.connect()
    client.send(get("/items/1"))
    await client.responses(1)
    assert await client.closed(timeout=3)


async def test_queued_requests_wait_for_the_instance(served: Served) -> None:
    # Concurrency 1 and max scale 1: the second request waits in the function's queue.
    served.harness.update_function("echo", max_scale=1)
    await until(lambda: served.harness.executor.function("echo").spec.max_scale == 1)
    clients = [await served.connect() for _ in range(3)]
    for n, client in enumerate(clients):
        client.send(get(f"/items/{n}?sleep=0.2"))
    answers = [(await client.responses(1))[0] for client in clients]
    assert [a.json()["params"]["id"] for a in answers] == ["0", "1", "2"]
    assert len(served.harness.executor.function("echo").instances) == 1


async def test_timeout_and_crash_answers(served: Served) -> None:
    client = await served.connect()
    client.send(get("/items/1?sleep=5"))
    [late] = await client.responses(1, timeout=10)
    assert late.status == 504 and "its instance was killed" in late.json()["error"]["message"]
    client.send(get("/items/1?exit=3"))
    [died] = await client.responses(1)
    assert died.status == 502 and "exited with status 3" in died.json()["error"]["message"]
    client.send(get("/items/1"))
    [fine] = await client.responses(1)
    assert fine.status == 200


async def test_a_client_that_leaves_mid_request_does_not_disturb_others(
    served: Served,
) -> None:
    leaver = await served.connect()
    leaver.send(get("/items/1?sleep=0.3"))
    await asyncio.sleep(0.05)
    leaver.close()
    client = await served.connect()
    client.send(get("/items/2"))
    [fine] = await client.responses(1)
    assert fine.status == 200


async def test_websocket_upgrade_goes_to_the_function_or_uvicorn(served: Served) -> None:
    upgrade = (
        "GET {} HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\n"
        "connection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "sec-websocket-version: 13\r\n\r\n"
    )
    # To a function: its instance answers (a native function refuses), then the router closes.
    client = await served.connect()
    client.send(upgrade.format("/function/echo").encode())
    [refused] = await client.responses(1)
    assert refused.status == 400
    assert refused.json()["error"]["code"] == "websocket_unsupported"
    assert await client.closed()
    # Elsewhere, uvicorn's protocol takes it: the router closes websockets outside
    # /invocations/, so uvicorn refuses the handshake.
    client = await served.connect()
    client.send(upgrade.format("/nowhere").encode())
    head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 403")


async def test_graceful_stop_finishes_the_request_in_flight(served: Served) -> None:
    client = await served.connect()
    client.send(get("/items/1?sleep=0.5"))
    await asyncio.sleep(0.1)
    served.server.should_exit = True
    [answer] = await client.responses(1)
    assert answer.status == 200
    assert await client.closed()


async def test_a_function_that_cannot_load_gets_its_error_through_the_fast_path(
    served: Served,
) -> None:
    served.harness.function("broken", "import not_a_module_anywhere\n")
    client = await served.connect()
    client.send(get("/function/broken") + get("/items/1"))
    broken, fine = await client.responses(2)
    assert broken.status == 500 and broken.json()["error"]["code"] == "load_failed"
    assert "not_a_module_anywhere" in broken.json()["error"]["message"]
    assert fine.status == 200


async def test_a_hand_over_at_a_packet_boundary_passes_the_bytes_through(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_replay(self: RouterProtocol, request: object) -> None:
        raise AssertionError("replayed, not passed through")

    monkeypatch.setattr(RouterProtocol, "_relay", no_replay)
    client = await served.connect()
    # A body split over two packets, then more requests in the same packet as its end.
    head = b"POST /nowhere HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n\r\nabc"
    client.send(head)
    await asyncio.sleep(0.05)
    client.send(b"def" + get("/items/1") + post("/items/2", b"two"))
    nowhere, one, two = await client.responses(3)
    assert nowhere.status == 404 and one.status == 200
    assert two.json()["body"] == "two"
    client.send(get("/items/3"))
    [three] = await client.responses(1)
    assert three.json()["params"] == {"id": "3"}
