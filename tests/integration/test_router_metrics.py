"""Request metrics and the access log of the router (fissile/router/proxy.py's ``Trip``,
fissile/observability/access.py), on both of its paths: the router's own protocol (direct
calls) and the ASGI path (the router's own answers), in a real uvicorn server in front of a
real executor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from intkit import Harness, serving, until
from websockets.asyncio.client import connect

from fissile.models import HTTPTriggerSpec
from fissile.observability.access import AccessLog
from fissile.router import Router, RouterProtocol
from fissile.router.app import INVOCATION_PREFIX
from fissile.router.invoke import invoke

SOURCE = """
import os

def main(request):
    if request.path.endswith("/missing"):
        return "nothing", 404
    if request.path.endswith("/boom"):
        raise RuntimeError("boom")
    if request.path.endswith("/die"):
        os._exit(3)
    return "ok"
"""

# A raw ASGI app that echoes each websocket message.
ECHO = """
async def app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text")})
"""


@pytest.fixture
async def served(harness: Harness, tmp_path: Path) -> AsyncIterator[tuple[Router, str]]:
    harness.function("counted", SOURCE)
    spec = HTTPTriggerSpec(name="counted-route", function="counted", prefix="/c")
    harness.store.create("httptriggers", spec.name, spec.model_dump(mode="json"))
    log = AccessLog(
        tmp_path / "access.log", "json", interval=0.01, invocation_prefix=INVOCATION_PREFIX
    )
    router = Router(harness.executor, access_log=log)
    router.follow(harness.store)
    async with serving(router, RouterProtocol) as (_, port):
        yield router, f"http://127.0.0.1:{port}"
    log.close()


async def test_statuses_durations_and_cold_starts_are_counted(
    served: tuple[Router, str], harness: Harness
) -> None:
    router, url = served
    async with httpx.AsyncClient(base_url=url) as client:
        statuses = [
            (await client.get(path)).status_code
            for path in ("/c/ok", "/c/ok", "/c/missing", "/c/boom", "/c/die", "/nowhere")
        ]
    assert statuses == [200, 200, 404, 500, 502, 404]
    metrics = harness.executor.metrics.function("counted")
    assert metrics.requests == {200: 2, 404: 1, 500: 1, 502: 1}
    assert metrics.duration.count == 5
    assert metrics.queue_wait.count == 5
    # The first request waited for the first instance, made for it.
    assert metrics.cold_starts >= 1
    assert metrics.queue_wait.sum > 0

    # A call from inside the platform (async, timers, MQ) is counted too.
    result = await invoke(harness.executor, "counted", path="/ok")
    assert result.status == 200
    assert metrics.requests[200] == 3

    log = router.access_log
    assert log is not None
    records = log.recent("counted")
    assert [r["status"] for r in records] == [200, 200, 404, 500, 502]  # not the invoke
    first, second = records[0], records[1]
    assert first["cold"] is True and second["cold"] is False
    assert first["route"] == "counted-route" and first["path"] == "/c/ok"
    assert first["invocation_id"].startswith(INVOCATION_PREFIX)
    assert first["invocation_id"] != second["invocation_id"]
    assert len(first["trace_id"]) == 32 and first["trace_id"] != second["trace_id"]
    assert first["instance"] and first["bytes"] == 2
    assert second["queue_ms"] == 0.0
    assert first["duration_ms"] >= first["queue_ms"] > 0
    # The router's own answer for no route is in the file, with no function.
    path = log.path
    assert path is not None

    def written() -> str | None:
        text = path.read_text() if path.exists() else ""
        return text if text.count("\n") >= 6 else None

    lines = await until(written, timeout=5)
    assert '"path":"/nowhere"' in lines and '"function":null' in lines


async def test_no_metrics_counts_nothing(served: tuple[Router, str], harness: Harness) -> None:
    _, url = served
    harness.executor.metrics.enabled = False
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/c/ok")).status_code == 200
    assert harness.executor.metrics.function("counted").requests == {}


async def test_a_websocket_handshake_is_a_request_of_its_own(
    served: tuple[Router, str], harness: Harness
) -> None:
    # A request's record is its Trip, added when answered; a websocket upgrade later on the
    # same connection has a Trip of its own (here the function does not speak websocket: the
    # runtime's 400 goes back), logged and counted once, the earlier record left as it was.
    router, url = served
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /c/ok HTTP/1.1\r\nhost: x\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 200")
        await asyncio.wait_for(reader.readexactly(2), 30)  # "ok"
        writer.write(
            b"GET /c/missing HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
            b"sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)  # answered, then closed
        assert answer.startswith(b"HTTP/1.1 400")
        body = answer.split(b"\r\n\r\n", 1)[1]
    finally:
        writer.close()
    log = router.access_log
    assert log is not None
    records = log.recent("counted")
    assert [(r["path"], r["status"]) for r in records] == [("/c/ok", 200), ("/c/missing", 400)]
    assert records[1]["route"] == "counted-route" and records[1]["bytes"] == len(body)
    assert harness.executor.metrics.function("counted").requests == {200: 1, 400: 1}


async def test_a_websocket_is_logged_and_counted_at_its_101(
    served: tuple[Router, str], harness: Harness
) -> None:
    harness.function("echo", ECHO, contract="asgi", entrypoint="fx_echo:app")
    router, url = served
    ws_url = url.replace("http://", "ws://") + "/function/echo"
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with connect(
        ws_url, additional_headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
    ) as ws:
        await ws.send("hi")
        assert await asyncio.wait_for(ws.recv(), 30) == "hi"
    log = router.access_log
    assert log is not None
    (record,) = log.recent("echo")
    assert record["status"] == 101 and record["bytes"] is None
    assert record["path"] == "/function/echo" and record["route"] is None
    assert record["method"] == "GET" and record["client"] == "127.0.0.1"
    assert record["instance"] and record["cold"] is True  # its instance was made for it
    assert record["trace_id"] == trace and record["invocation_id"]
    assert record["duration_ms"] > 0
    metrics = harness.executor.metrics.function("echo")
    assert metrics.requests == {101: 1} and metrics.cold_starts == 1
    assert metrics.duration.count == 1


async def test_a_deleted_functions_recent_requests_are_forgotten(
    served: tuple[Router, str], harness: Harness
) -> None:
    router, url = served
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/c/ok")).status_code == 200
    log = router.access_log
    assert log is not None
    assert [r["path"] for r in log.recent("counted")] == ["/c/ok"]
    harness.store.delete("functions", "counted")
    await until(lambda: log.recent("counted") == [], timeout=30)
