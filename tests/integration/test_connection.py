"""fissile/executor/connection.py against scripted unix-socket servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from fissile.executor.connection import (
    InstanceConnection,
    InstanceGone,
    ResponseTooLarge,
    read_body,
)

REQUEST = b"GET / HTTP/1.1\r\nhost: i\r\ncontent-length: 0\r\n\r\n"
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[[Script], Awaitable[str]]]:
    servers: list[asyncio.AbstractServer] = []

    async def start(script: Script) -> str:
        path = str(tmp_path / f"s{len(servers)}.sock")
        servers.append(await asyncio.start_unix_server(script, path))
        return path

    yield start
    for server in servers:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def test_keep_alive_responses(serve: Callable[[Script], Awaitable[str]]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for n in range(3):
            await read_request(reader)
            body = f"answer {n}".encode()
            writer.write(
                b"HTTP/1.1 201 Created\r\nx-n: %d\r\ncontent-length: %d\r\n\r\n%s"
                % (n, len(body), body)
            )
        writer.close()

    conn = await InstanceConnection.open(await serve(script))
    for n in range(3):
        response = await asyncio.wait_for(conn.request(REQUEST), 5)
        assert (response.status, response.body, response.keep_alive) == (
            201,
            f"answer {n}".encode(),
            True,
        )
        assert (b"x-n", str(n).encode()) in response.headers
    conn.close()


async def test_chunked_response(serve: Callable[[Script], Awaitable[str]]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in (b"hel", b"lo"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")

    conn = await InstanceConnection.open(await serve(script))
    response = await asyncio.wait_for(conn.request(REQUEST), 5)
    # Chunked: streamed, the head first, the body read from its stream.
    assert response.stream is not None and response.body == b""
    assert await asyncio.wait_for(read_body(response.stream, 100), 5) == b"hello"
    conn.close()


async def test_connection_close(serve: Callable[[Script], Awaitable[str]]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
        writer.close()

    conn = await InstanceConnection.open(await serve(script))
    response = await asyncio.wait_for(conn.request(REQUEST), 5)
    assert (response.body, response.keep_alive) == (b"ok", False)
    assert conn.closed
    with pytest.raises(InstanceGone, match="connection closed"):
        await conn.request(REQUEST)


async def test_closed_mid_response(serve: Callable[[Script], Awaitable[str]]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    conn = await InstanceConnection.open(await serve(script))
    with pytest.raises(InstanceGone, match="instance closed the connection"):
        await asyncio.wait_for(conn.request(REQUEST), 5)
    assert conn.closed


async def test_malformed_response(serve: Callable[[Script], Awaitable[str]]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SPDY/9 what is this\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    conn = await InstanceConnection.open(await serve(script))
    with pytest.raises(InstanceGone, match="malformed response from instance"):
        await asyncio.wait_for(conn.request(REQUEST), 5)
    assert conn.closed


async def test_nothing_listening(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        await InstanceConnection.open(str(tmp_path / "missing.sock"))


async def test_send_hands_each_outcome_to_its_callback(
    serve: Callable[[Script], Awaitable[str]],
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\ncut")  # then gone
        writer.close()

    conn = await InstanceConnection.open(await serve(script))
    outcomes: asyncio.Queue[object] = asyncio.Queue()

    def first(outcome: object) -> None:
        outcomes.put_nowait(outcome)
        # A callback may send the next request at once: it runs after the parser is done.
        conn.send(REQUEST, outcomes.put_nowait)

    conn.send(REQUEST, first)
    answered = await asyncio.wait_for(outcomes.get(), 5)
    assert getattr(answered, "body", None) == b"ok"
    second = await asyncio.wait_for(outcomes.get(), 5)
    assert isinstance(second, InstanceGone)
    # A closed connection answers at once.
    conn.send(REQUEST, outcomes.put_nowait)
    assert isinstance(outcomes.get_nowait(), InstanceGone)


class Collect:
    """A ``BodySink`` that keeps what it is given."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ended: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def body(self, data: bytes) -> None:
        self.data += data

    def end(self, error: Exception | None) -> None:
        self.ended.set_result(error)


async def test_bodies_complete_in_one_read_come_whole_longer_ones_stream(
    serve: Callable[[Script], Awaitable[str]],
) -> None:
    # Small: complete in the read its body began in. Large: more than a read can carry.
    small, large = b"s" * 65536, b"l" * (4 * 1024 * 1024)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for body in (small, large, small):
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    conn = await InstanceConnection.open(await serve(script))
    first = await asyncio.wait_for(conn.request(REQUEST), 5)
    assert (first.stream, first.body) == (None, small)
    second = await asyncio.wait_for(conn.request(REQUEST), 5)
    assert second.stream is not None and second.length == len(large)
    sink = Collect()
    second.stream.attach(sink)
    assert await asyncio.wait_for(sink.ended, 5) is None
    assert bytes(sink.data) == large
    # Kept alive after a streamed body, the connection reads the next response.
    third = await asyncio.wait_for(conn.request(REQUEST), 5)
    assert third.body == small
    conn.close()


async def test_a_paused_stream_stops_reading_from_the_instance(
    serve: Callable[[Script], Awaitable[str]],
) -> None:
    size = 32 * 1024 * 1024
    drained = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"x" * 65536)
            await writer.drain()
        drained.set()

    conn = await InstanceConnection.open(await serve(script))
    response = await asyncio.wait_for(conn.request(REQUEST), 5)
    assert response.stream is not None
    sink = Collect()
    response.stream.pause()
    response.stream.attach(sink)
    await asyncio.sleep(0.5)  # a paused reader: whatever arrives now stays in the kernel
    assert not drained.is_set() and len(sink.data) < 4 * 1024 * 1024
    response.stream.resume()
    assert await asyncio.wait_for(sink.ended, 30) is None
    assert len(sink.data) == size and drained.is_set()
    conn.close()


async def test_a_stream_broken_off_ends_with_instance_gone(
    serve: Callable[[Script], Awaitable[str]],
) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        writer.close()

    conn = await InstanceConnection.open(await serve(script))
    response = await asyncio.wait_for(conn.request(REQUEST), 5)
    assert response.stream is not None
    sink = Collect()
    response.stream.attach(sink)
    assert isinstance(await asyncio.wait_for(sink.ended, 5), InstanceGone)
    assert bytes(sink.data) == b"abc" and conn.closed


async def test_read_body_stops_at_its_limit(serve: Callable[[Script], Awaitable[str]]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(b"10000\r\n" + b"y" * 65536 + b"\r\n")
                await writer.drain()

    conn = await InstanceConnection.open(await serve(script))
    response = await asyncio.wait_for(conn.request(REQUEST), 5)
    assert response.stream is not None
    with pytest.raises(ResponseTooLarge, match="exceeds 1000000 bytes"):
        await asyncio.wait_for(read_body(response.stream, 1_000_000), 10)
    assert conn.closed
