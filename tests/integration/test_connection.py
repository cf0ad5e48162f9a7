"""fissile/executor/connection.py against scripted unix-socket servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from fissile.executor.connection import InstanceConnection, InstanceGone, read_body

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
