"""Streamed responses end to end inside one process: the instance runtime (generators) ->
``InstanceConnection`` (streaming mode) -> ``BodyRelay`` (cap, timeout, flow control) -> the
router's protocol or the ASGI path -> a raw client socket; and ``invoke`` collecting a body."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import httptools
import pytest
from intkit import Harness, pid_alive, serving, until

from fissile.executor.connection import InstanceResponse
from fissile.router import Router, RouterProtocol
from fissile.router.invoke import invoke
from fissile.router.proxy import Answer

CODE = """
import asyncio, time

produced = 0

def chunks(request):
    n = int(request.query.get("n", "4"))
    size = int(request.query.get("size", "1000"))
    def body():
        for i in range(n):
            yield bytes([97 + i % 26]) * size
    return body()

def text(request):
    return (f"line {i}\\n" for i in range(3))

def sized(request):
    return b"s" * int(request.query["size"])

async def endless(request):
    global produced
    if request.query.get("produced"):
        return {"produced": produced}
    async def body():
        global produced
        while True:
            produced += 65536
            yield b"e" * 65536
    return body()

def stall(request):
    def body():
        yield b"first"
        time.sleep(30)
        yield b"never"
    return body()

def broken(request):
    def body():
        yield b"first"
        raise RuntimeError("broke mid-stream")
    return body()

def empty(request):
    return iter(())

def early(request):
    def body():
        raise ValueError("no first chunk")
        yield b"unreachable"
    return body()

def odd(request):
    return iter([b"fine", 42])
"""

CAP = 1024 * 1024


class Reply:
    """One response read off a raw socket: its head, its body, and how it ended."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.complete = False  # the body's end arrived (length reached, chunked terminator)
        self.closed = False  # the connection closed before or after it


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reply = Reply()
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.reply.headers[name.decode().lower()] = value.decode()

    def on_headers_complete(self) -> None:
        self.reply.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.reply.body += body

    def on_message_complete(self) -> None:
        self.reply.complete = True

    def get(self, path: str) -> None:
        self.reply = Reply()
        self.writer.write(f"GET {path} HTTP/1.1\r\nhost: router.test\r\n\r\n".encode())

    async def read(self, until_bytes: int | None = None, timeout: float = 30.0) -> Reply:
        """Read until the response is complete, the connection closes, or (with
        ``until_bytes``) that much body has arrived."""
        async with asyncio.timeout(timeout):
            while not self.reply.complete:
                if until_bytes is not None and len(self.reply.body) >= until_bytes:
                    break
                data = await self.reader.read(1 << 20)
                if not data:
                    self.reply.closed = True
                    break
                self.parser.feed_data(data)
        return self.reply

    def close(self) -> None:
        self.writer.close()


class Served:
    def __init__(self, harness: Harness, port: int) -> None:
        self.harness = harness
        self.port = port

    async def connect(self, receive_buffer: int | None = None) -> Client:
        sock = socket.socket()
        if receive_buffer is not None:
            # Fixed, so a client that does not read holds a known amount in its kernel.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        return Client(reader, writer)

    async def fetch(self, path: str) -> Reply:
        client = await self.connect()
        try:
            client.get(path)
            return await client.read()
        finally:
            client.close()

    def log(self, function: str) -> str:
        path = self.harness.logs.function_log(function)
        return path.read_text() if path.exists() else ""


@pytest.fixture
async def served(harness: Harness) -> AsyncIterator[Served]:
    for name in ("chunks", "text", "sized", "stall", "broken", "empty", "early", "odd"):
        harness.function(name, CODE, entrypoint=f"fx_{name}.{name}", timeout=20)
    harness.function(
        "endless", CODE, entrypoint="fx_endless.endless", concurrency=2, max_scale=1, timeout=60
    )
    harness.function("short", CODE, entrypoint="fx_short.stall", timeout=1)
    harness.executor.max_response_body = CAP
    router = Router(harness.executor)
    router.follow(harness.store)
    async with serving(router, RouterProtocol, timeout_graceful_shutdown=2) as (_, port):
        yield Served(harness, port)


def _pids(harness: Harness, function: str) -> set[int]:
    return {i.pid for i in harness.executor.functions[function].instances}


async def test_a_generator_streams_chunked_and_the_connection_is_reused(served: Served) -> None:
    client = await served.connect()
    for n in (3, 5):
        client.get(f"/function/chunks?n={n}&size=100000")
        reply = await client.read()
        assert reply.status == 200 and reply.complete and not reply.closed
        assert reply.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in reply.headers
        assert reply.headers["content-type"] == "application/octet-stream"
        expected = b"".join(bytes([97 + i]) * 100000 for i in range(n))
        assert bytes(reply.body) == expected
    # The same keep-alive connection then serves a small answer (today's buffered path).
    client.get("/function/sized?size=10")
    reply = await client.read()
    assert (reply.status, bytes(reply.body), reply.headers["content-length"]) == (
        200,
        b"s" * 10,
        "10",
    )
    client.close()


async def test_str_items_default_to_text_and_an_empty_stream_is_empty(served: Served) -> None:
    reply = await served.fetch("/function/text")
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert bytes(reply.body) == b"line 0\nline 1\nline 2\n" and reply.complete
    reply = await served.fetch("/function/empty")
    assert (reply.status, bytes(reply.body), reply.complete) == (200, b"", True)


async def test_a_large_declared_length_is_streamed_with_it(served: Served) -> None:
    reply = await served.fetch("/function/sized?size=900000")  # more than one read, < CAP
    assert reply.headers["content-length"] == "900000"
    assert bytes(reply.body) == b"s" * 900000 and reply.complete


async def test_a_declared_length_over_the_cap_is_refused_with_502(served: Served) -> None:
    reply = await served.fetch(f"/function/sized?size={CAP + 1}")
    assert reply.status == 502
    assert json.loads(reply.body)["error"]["code"] == "response_too_large"
    assert "--max-response-body" in served.log("sized")


async def test_a_stream_over_the_cap_is_cut_and_its_instance_recycled(served: Served) -> None:
    client = await served.connect()
    client.get("/function/chunks?n=100&size=65536")
    await client.read(until_bytes=1)
    [pid] = _pids(served.harness, "chunks")
    reply = await client.read()
    # The head went out, then at most the cap of body, then the connection closed without
    # the chunked terminator.
    assert reply.status == 200 and reply.headers["transfer-encoding"] == "chunked"
    assert reply.closed and not reply.complete
    assert 0 < len(reply.body) <= CAP
    log = await until(lambda: "response cut, instance recycled" in served.log("chunks"), 10)
    assert log
    await until(lambda: not pid_alive(pid), 10)
    # The function serves on, from a new instance.
    reply = await served.fetch("/function/chunks?n=2&size=10")
    assert bytes(reply.body) == b"a" * 10 + b"b" * 10


async def test_a_client_that_does_not_read_pauses_the_instance(served: Served) -> None:
    async def produced() -> int:
        reply = await served.fetch("/function/endless?produced=1")
        value: int = json.loads(reply.body)["produced"]
        return value

    served.harness.executor.max_response_body = 1 << 40  # only the buffers bound it here
    stuck = await served.connect(receive_buffer=64 * 1024)
    stuck.get("/function/endless")
    # The generator runs until every buffer between it and the client is full, then waits.
    readings = [await produced()]
    while len(readings) < 3 or not readings[-1] or len(set(readings[-3:])) > 1:
        assert len(readings) < 100, readings
        await asyncio.sleep(0.3)
        readings.append(await produced())
    plateau = readings[-1]
    assert plateau < 16 * 1024 * 1024, readings
    assert served.harness.executor.functions["endless"].inflight == 1  # paused, not cut
    # A neighbour is served meanwhile.
    reply = await served.fetch("/function/chunks?n=2&size=10")
    assert reply.complete
    # Reading again resumes the instance.
    await stuck.read(until_bytes=plateau + 8 * 1024 * 1024)
    assert await produced() > plateau
    stuck.close()
    # Gone, the client's stream is stopped at the instance (its connection closed there).
    await until(lambda: served.harness.executor.functions["endless"].inflight == 0, 10)
    first = await produced()
    await asyncio.sleep(0.3)
    assert await produced() == first


async def test_a_stream_past_the_timeout_is_cut_and_its_instance_killed(served: Served) -> None:
    client = await served.connect()
    client.get("/function/short")
    reply = await client.read()
    assert reply.status == 200 and bytes(reply.body) == b"first"
    assert reply.closed and not reply.complete
    await until(lambda: "timeout after 1s" in served.log("short"), 10)


async def test_an_error_mid_stream_breaks_the_body(served: Served) -> None:
    reply = await served.fetch("/function/broken")
    assert reply.status == 200 and bytes(reply.body) == b"first"
    assert reply.closed and not reply.complete
    await until(lambda: "broke mid-stream" in served.log("broken"), 10)


async def test_the_asgi_path_streams_too(served: Served) -> None:
    client = await served.connect()
    # A request only the ASGI router answers hands the connection over to uvicorn's protocol.
    client.writer.write(b"GET /nowhere HTTP/1.1\r\nhost: router.test\r\n\r\n")
    assert (await client.read()).status == 404
    client.get("/function/chunks?n=3&size=100000")
    reply = await client.read()
    assert reply.complete and reply.headers["transfer-encoding"] == "chunked"
    assert len(reply.body) == 300000
    client.get("/function/chunks?n=100&size=65536")
    reply = await client.read()
    assert reply.closed and not reply.complete and len(reply.body) <= CAP
    client.close()


async def test_invoke_collects_a_streamed_body_up_to_the_cap(served: Served) -> None:
    executor = served.harness.executor
    result: InstanceResponse | Answer = await invoke(
        executor, "chunks", method="GET", path="/?n=3&size=100000"
    )
    assert isinstance(result, InstanceResponse) and result.stream is None
    assert len(result.body) == 300000
    result = await invoke(executor, "chunks", method="GET", path="/?n=100&size=65536")
    assert isinstance(result, Answer)
    assert (result.status, result.code) == (502, "response_too_large")


async def test_an_error_before_the_first_item_is_a_500(served: Served) -> None:
    reply = await served.fetch("/function/early")
    assert reply.status == 500 and reply.complete
    error = json.loads(reply.body)["error"]
    assert (error["type"], error["message"]) == ("ValueError", "no first chunk")


async def test_an_item_neither_bytes_nor_str_breaks_the_body(served: Served) -> None:
    reply = await served.fetch("/function/odd")
    assert (bytes(reply.body), reply.closed, reply.complete) == (b"fine", True, False)
    await until(lambda: "yields bytes or str, not int" in served.log("odd"), 10)


async def test_a_client_leaving_the_asgi_path_mid_body_frees_the_instance(
    served: Served,
) -> None:
    served.harness.executor.max_response_body = 1 << 40
    client = await served.connect()
    client.writer.write(b"GET /nowhere HTTP/1.1\r\nhost: router.test\r\n\r\n")
    assert (await client.read()).status == 404
    client.get("/function/endless")
    await client.read(until_bytes=1024 * 1024)
    pool = served.harness.executor.functions["endless"]
    assert pool.inflight == 1
    client.close()
    await until(lambda: pool.inflight == 0, 10)


async def test_head_of_a_streamed_response_stops_the_stream(served: Served) -> None:
    served.harness.executor.max_response_body = 1 << 40
    client = await served.connect()
    client.writer.write(b"HEAD /function/endless HTTP/1.1\r\nhost: router.test\r\n\r\n")
    data = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 10)
    assert data.startswith(b"HTTP/1.1 200 ") and b"application/octet-stream" in data
    pool = served.harness.executor.functions["endless"]
    await until(lambda: pool.inflight == 0, 10)
    client.close()


async def test_an_http10_client_gets_the_body_up_to_the_connection_close(served: Served) -> None:
    client = await served.connect()
    client.writer.write(b"GET /function/chunks?n=3&size=100000 HTTP/1.0\r\n\r\n")
    raw = await asyncio.wait_for(client.reader.read(-1), 30)  # to the connection's end
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" in head
    assert b"transfer-encoding" not in head and b"content-length" not in head
    assert body == b"a" * 100000 + b"b" * 100000 + b"c" * 100000
    client.close()
