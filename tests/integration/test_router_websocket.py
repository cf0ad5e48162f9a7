"""fissile/router/websocket.py with a real router, executor and instance: what the supervisor
holds while a websocket's client does not read, and the function's slot while it is open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from intkit import Harness, QuietServer, serving, until
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from fissile.router import Router, RouterProtocol
from fissile.router.websocket import Tunnel

# A raw ASGI app: on "flood N" it sends N messages of 64 KiB, then "done".
FLOOD = """
async def app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        count = int(message["text"].split()[1])
        for n in range(count):
            await send({"type": "websocket.send", "bytes": n.to_bytes(4, "big") * 16384})
        await send({"type": "websocket.send", "text": "done"})
"""
MESSAGES = 2000  # 128 MiB: far more than any buffer on the way


@pytest.fixture
async def router(harness: Harness) -> AsyncIterator[tuple[Router, int, QuietServer]]:
    harness.function("flood", FLOOD, contract="asgi", entrypoint="fx_flood:app", max_scale=1)
    router = Router(harness.executor)
    router.follow(harness.store)
    options = {"timeout_keep_alive": 1, "timeout_graceful_shutdown": 30}
    async with serving(router, RouterProtocol, **options) as (server, port):
        yield router, port, server


def tunnel_of(router: Router) -> Tunnel | None:
    return next((c for c in router.connections.open if isinstance(c, Tunnel)), None)


async def test_a_client_that_does_not_read_pauses_the_instance(
    router: tuple[Router, int, QuietServer], harness: Harness
) -> None:
    app, port, _ = router
    # A small queue: the client stops reading its socket after a few messages.
    async with connect(f"ws://127.0.0.1:{port}/function/flood", max_queue=2) as ws:
        tunnel = await until(lambda: tunnel_of(app), timeout=30)
        pool = harness.executor.functions["flood"]
        assert pool.inflight == 1  # the websocket holds its slot
        await ws.send(f"flood {MESSAGES}")
        # The router stops reading the instance while the client is behind ...
        await until(lambda: not tunnel.instance.is_reading(), timeout=30)
        for _ in range(20):
            # ... and stays so, holding no more than the client transport's buffer.
            assert tunnel.client.get_write_buffer_size() <= 1 << 20
            assert not tunnel.instance.is_reading()
            await asyncio.sleep(0.01)
        received = 0
        while (message := await asyncio.wait_for(ws.recv(), 30)) != "done":
            assert message[:4] == received.to_bytes(4, "big")
            received += 1
        assert received == MESSAGES
    await until(lambda: pool.inflight == 0, timeout=30)
    assert tunnel_of(app) is None


async def test_a_graceful_stop_ends_open_websockets(
    router: tuple[Router, int, QuietServer], harness: Harness
) -> None:
    app, port, server = router
    async with connect(f"ws://127.0.0.1:{port}/function/flood") as ws:
        await until(lambda: tunnel_of(app), timeout=30)
        server.should_exit = True
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 30)
    assert ws.close_code == 1001
    pool = harness.executor.functions["flood"]
    await until(lambda: pool.inflight == 0 and not app.connections.open, timeout=30)
