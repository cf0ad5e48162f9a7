"""fissile/router/limits.py and their enforcement in fissile/router/protocol.py: header bytes and
count (431), the header-read timeout (408), the connection limit (503), and a malformed request
after pipelined ones (answered after them, 400) -- on the router's own path and on connections
handed to uvicorn's protocol. A real uvicorn server on loopback, raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest
from intkit import Harness, serving, until
from test_router_protocol import ECHO, Client, Served, get

from fissile.models import HTTPTriggerSpec
from fissile.router import Router, RouterProtocol
from fissile.router.limits import Limits

Serve = Callable[[Limits], AbstractAsyncContextManager[Served]]

# Slow enough for a loaded machine to tell "timed out" from "not yet".
HEADER_TIMEOUT = 1.0


@pytest.fixture
async def serve(harness: Harness) -> AsyncIterator[Serve]:
    harness.function("echo", ECHO, timeout=5)
    harness.store.create(
        "httptriggers",
        "items",
        HTTPTriggerSpec(name="items", function="echo", url="/items/{id}").model_dump(mode="json"),
    )

    @contextlib.asynccontextmanager
    async def start(limits: Limits) -> AsyncIterator[Served]:
        router = Router(harness.executor, max_body=1000, limits=limits)
        router.follow(harness.store)
        options = {"timeout_keep_alive": 30, "timeout_graceful_shutdown": 5}
        async with serving(router, RouterProtocol, **options) as (server, port):
            yield Served(harness, server, port)

    yield start


def error_code(response: object) -> str:
    code: str = response.json()["error"]["code"]  # type: ignore[attr-defined]
    return code


async def handed_over(served: Served) -> Client:
    """A connection uvicorn's protocol serves: a request the router's own path does not take,
    alone in its packet (its bytes and everything after pass through)."""
    client = await served.connect()
    client.send(get("/nowhere"))
    [nowhere] = await client.responses(1)
    assert nowhere.status == 404
    return client


@pytest.mark.parametrize("path", ["own", "handed-over"])
async def test_too_many_headers_get_431_and_the_connection_closes(serve: Serve, path: str) -> None:
    async with serve(Limits(max_headers=20)) as served:
        client = await (served.connect() if path == "own" else handed_over(served))
        extra = "".join(f"x-h{n}: v\r\n" for n in range(19))  # + host = 20: allowed
        client.send(get("/items/1", extra))
        [fine] = await client.responses(1)
        assert fine.status == 200
        client.send(get("/items/2", extra + "x-one-more: v\r\n"))
        [refused] = await client.responses(1)
        assert (refused.status, error_code(refused)) == (431, "too_many_headers")
        assert "more than 20 request headers" in refused.json()["error"]["message"]
        assert refused.headers["connection"] == "close"
        assert await client.closed()


@pytest.mark.parametrize("path", ["own", "handed-over"])
async def test_header_bytes_and_the_target_count_against_max_header_bytes(
    serve: Serve, path: str
) -> None:
    async with serve(Limits(max_header_bytes=4096)) as served:
        for request in (
            get("/items/1", f"x-big: {'b' * 4100}\r\n"),  # one large header
            get("/items/" + "a" * 4100),  # a large target
            get("/items/1", "".join(f"x-{n}: {'c' * 90}\r\n" for n in range(45))),
        ):
            client = await (served.connect() if path == "own" else handed_over(served))
            client.send(request)
            [refused] = await client.responses(1)
            assert (refused.status, error_code(refused)) == (431, "headers_too_large")
            assert "exceed 4096 bytes" in refused.json()["error"]["message"]
            assert await client.closed()
        client = await served.connect()
        client.send(get("/items/" + "a" * 2000, f"x-fine: {'d' * 1500}\r\n"))
        [fine] = await client.responses(1)
        assert fine.status == 200


@pytest.mark.parametrize("path", ["own", "handed-over"])
async def test_an_endless_header_is_refused_while_it_is_being_sent(serve: Serve, path: str) -> None:
    # httptools keeps an incomplete header to itself: only the packets show it growing.
    async with serve(Limits(max_header_bytes=4096)) as served:
        client = await (served.connect() if path == "own" else handed_over(served))
        client.send(b"GET /items/1 HTTP/1.1\r\nhost: x\r\nx-endless: ")
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
        [refused] = await answered
        assert (refused.status, error_code(refused)) == (431, "headers_too_large")
        assert sent < 4 * 1024 * 1024, sent  # refused early, not after 64 MiB


async def test_a_head_not_received_within_the_header_timeout_gets_408(serve: Serve) -> None:
    async with serve(Limits(header_timeout=HEADER_TIMEOUT)) as served:
        silent = await served.connect()  # says nothing at all
        partial = await served.connect()
        partial.send(b"GET /items/1 HTTP/1.1\r\nhost: x\r\n")
        trickle = await served.connect()
        after_one = await served.connect()  # a complete request, then half of the next
        after_one.send(get("/items/1"))
        [fine] = await after_one.responses(1)
        assert fine.status == 200
        after_one.send(b"GET /items/2 HTTP/1.1\r\n")
        loop = asyncio.get_running_loop()
        started = loop.time()
        answered = asyncio.create_task(trickle.responses(1, timeout=HEADER_TIMEOUT * 10))
        for byte in b"GET /items/3 HTTP/1.1\r\nhost: x\r\nx-slow: " + b"9" * 100:
            if answered.done():
                break
            trickle.send(bytes([byte]))
            await asyncio.sleep(HEADER_TIMEOUT / 8)
        [late] = await answered
        assert (late.status, error_code(late)) == (408, "header_timeout")
        # Cut off within about the timeout, long before its last byte.
        assert loop.time() - started < HEADER_TIMEOUT * 5
        for client in (silent, partial, after_one):
            [late] = await client.responses(1, timeout=HEADER_TIMEOUT * 10)
            assert (late.status, error_code(late)) == (408, "header_timeout")
            assert late.headers["connection"] == "close"
            assert await client.closed()


async def test_a_slow_function_is_not_a_slow_client(serve: Serve) -> None:
    async with serve(Limits(header_timeout=HEADER_TIMEOUT)) as served:
        client = await served.connect()
        client.send(get(f"/items/1?sleep={HEADER_TIMEOUT * 2}"))
        [answer] = await client.responses(1, timeout=HEADER_TIMEOUT * 10)
        assert answer.status == 200


async def test_past_max_connections_new_connections_get_503(serve: Serve) -> None:
    async with serve(Limits(max_connections=3)) as served:
        held = [await served.connect() for _ in range(3)]
        for client in held:
            client.send(get("/items/1"))
            [fine] = await client.responses(1)
            assert fine.status == 200
        extra = await served.connect()
        [full] = await extra.responses(1)  # answered without being asked
        assert (full.status, error_code(full)) == (503, "too_many_connections")
        assert full.headers["retry-after"] == "1"
        assert await extra.closed()
        held.pop().close()
        await until(lambda: len(served.server.config.app.connections.open) == 2)
        again = await served.connect()
        again.send(get("/items/2"))
        [fine] = await again.responses(1)
        assert fine.status == 200


@pytest.mark.parametrize("first", ["/items/1", "/nowhere"])
async def test_pipelined_requests_then_garbage_are_answered_then_400(
    serve: Serve, first: str
) -> None:
    async with serve(Limits()) as served:
        client = await served.connect()
        client.send(get(first) + get("/items/2") + b"\x01\x02 garbage\r\n\r\n")
        one, two, bad = await client.responses(3)
        assert one.status == (200 if first == "/items/1" else 404)
        assert two.status == 200 and two.json()["params"] == {"id": "2"}
        assert (bad.status, error_code(bad)) == (400, "bad_request")
        assert await client.closed()


async def test_garbage_after_a_pass_through_hand_over_is_answered_in_order(
    serve: Serve,
) -> None:
    async with serve(Limits()) as served:
        client = await handed_over(served)
        client.send(get("/nowhere") + get("/items/2") + b"\x01\x02 garbage\r\n\r\n")
        nowhere, two, bad = await client.responses(3)
        assert (nowhere.status, two.status, bad.status) == (404, 200, 400)
        assert await client.closed()
