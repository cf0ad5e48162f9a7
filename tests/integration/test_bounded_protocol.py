"""fissile/router/bounded.py: uvicorn's protocol for the control API and the platform socket,
held to the router's limits (431 for large or many headers, 408 for a slow head, a cap on
connections) -- a real uvicorn server on loopback, raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from intkit import serving
from test_router_protocol import Client, get

from fissile.router.bounded import bounded_protocol
from fissile.router.limits import Limits

HEADER_TIMEOUT = 1.0
LIMITS = Limits(
    max_header_bytes=4096, max_headers=20, header_timeout=HEADER_TIMEOUT, max_connections=3
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with serving(app, bounded_protocol(LIMITS)) as (_, port):
        yield port


async def connect(port: int) -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return Client(reader, writer)


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (get("/", "".join(f"x-{n}: v\r\n" for n in range(20))), "too_many_headers"),
        (get("/", f"x-big: {'b' * 4100}\r\n"), "headers_too_large"),
        (get("/" + "u" * 4100), "headers_too_large"),
    ],
)
async def test_large_heads_get_431(port: int, request_bytes: bytes, code: str) -> None:
    client = await connect(port)
    client.send(get("/"))
    [fine] = await client.responses(1)
    assert fine.status == 200 and fine.body == b"ok"
    client.send(request_bytes)
    [refused] = await client.responses(1)
    assert (refused.status, refused.json()["error"]["code"]) == (431, code)
    assert await client.closed()


async def test_an_endless_header_is_cut_off(port: int) -> None:
    client = await connect(port)
    client.send(b"GET / HTTP/1.1\r\nhost: x\r\nx-endless: ")
    answered = asyncio.create_task(client.responses(1))
    sent = 0
    with contextlib.suppress(ConnectionError):
        while not answered.done() and sent < 64 * 1024 * 1024:
            client.send(b"e" * 65536)
            await client.writer.drain()
            sent += 65536
            # Let the answer in: drain() returns at once while the kernel's buffers (tcp_rmem
            # autotunes to tens of MiB on loopback) take the bytes, so only a yield notices it.
            await asyncio.sleep(0)
    with contextlib.suppress(ConnectionError):
        await answered
    assert sent < 4 * 1024 * 1024, sent


async def test_slow_or_silent_clients_get_408(port: int) -> None:
    silent = await connect(port)
    partial = await connect(port)
    partial.send(b"GET / HTTP/1.1\r\nhost: x\r\n")
    for client in (silent, partial):
        [late] = await client.responses(1, timeout=HEADER_TIMEOUT * 10)
        assert (late.status, late.json()["error"]["code"]) == (408, "header_timeout")
        assert await client.closed()


async def test_connections_past_the_cap_are_closed(port: int) -> None:
    held = [await connect(port) for _ in range(3)]
    for client in held:
        client.send(get("/"))
        [fine] = await client.responses(1)
        assert fine.status == 200
    extra = await connect(port)
    assert await extra.closed()
    held.pop().close()

    async def served_again() -> bool:
        client = await connect(port)
        client.send(get("/"))
        with contextlib.suppress(ConnectionError):
            answers = await client.responses(1)
            return bool(answers) and answers[0].status == 200
        return False

    deadline = asyncio.get_running_loop().time() + 10
    while not await served_again():
        assert asyncio.get_running_loop().time() < deadline, "the freed slot was not reused"
