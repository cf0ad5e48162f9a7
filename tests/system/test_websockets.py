"""Websockets to functions through a real router, driven by the websockets library's client: a
FastAPI app's websocket routes behind a prefix route and at /function/<name>, a native function
refusing the upgrade, an app refusing before accept, the function's concurrency slot held while
a websocket is open, and websockets ended by an update and by idling."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from syskit import Platform, wait_for, write
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

DEADLINE = 60.0

CHAT_APP = """
import os

from fastapi import FastAPI, WebSocket

app = FastAPI()
closes = []


@app.websocket("/ws/{room}")
async def chat(websocket: WebSocket, room: str):
    await websocket.accept()
    root = websocket.scope["root_path"]
    await websocket.send_text(f"joined {room} at {root} ({os.environ.get('VERSION', '1')})")
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            closes.append(message["code"])
            return
        if message.get("text") == "close":
            await websocket.close(code=4001, reason="bye")
            return
        if message.get("text") is not None:
            await websocket.send_text("echo:" + message["text"])
        else:
            await websocket.send_bytes(message["bytes"][::-1])


@app.websocket("/refuse")
async def refuse(websocket: WebSocket):
    await websocket.close()


@app.get("/closes")
def get_closes():
    return {"closes": closes, "pid": os.getpid()}
"""

NATIVE = """
def main(request):
    return "plain"
"""


@pytest.fixture(scope="module")
def chat(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Platform:
    root = tmp_path_factory.mktemp("ws")
    app = write(root / "chat_app.py", CHAT_APP)
    native = write(root / "plain.py", NATIVE)
    common = ("--code", str(app), "--entrypoint", "chat_app:app", "--contract", "asgi")
    platform.ok_many(
        ("fn", "create", "--name", "ws-chat", *common, "--max-scale", "1"),
        ("fn", "create", "--name", "ws-plain", "--code", str(native)),
        # One websocket at a time, the next waiting for it...
        ("fn", "create", "--name", "ws-slot", *common, "--max-scale", "1", "--concurrency", "1",
         "--queue-timeout", "60s"),
        # ... or not for long.
        ("fn", "create", "--name", "ws-busy", *common, "--max-scale", "1", "--concurrency", "1",
         "--queue-timeout", "1s"),
        ("fn", "create", "--name", "ws-roll", *common, "--max-scale", "1"),
        ("fn", "create", "--name", "ws-idle", *common, "--max-scale", "1", "--idle-timeout", "2s"),
    )  # fmt: skip
    platform.ok_many(
        ("route", "create", "--function", "ws-chat", "--prefix", "/chat"),
        ("route", "create", "--function", "ws-plain", "--url", "/plain"),
    )
    return platform


def ws_url(platform: Platform, path: str) -> str:
    return platform.router_url.replace("http://", "ws://", 1) + path


@contextmanager
def websocket(platform: Platform, path: str, **kwargs: Any) -> Iterator[ClientConnection]:
    kwargs.setdefault("open_timeout", DEADLINE)
    kwargs.setdefault("ping_interval", None)  # the tests' own traffic only
    with connect(ws_url(platform, path), **kwargs) as connection:
        yield connection


def closes(platform: Platform, path: str) -> list[int]:
    response = platform.get(path)
    assert response.status_code == 200, response.text
    result: list[int] = response.json()["closes"]
    return result


def test_echo_behind_a_prefix_route(chat: Platform) -> None:
    with websocket(chat, "/chat/ws/lobby") as ws:
        assert ws.recv(timeout=DEADLINE) == "joined lobby at /chat (1)"
        for text in ("one", "two", "three"):
            ws.send(text)
            assert ws.recv(timeout=DEADLINE) == f"echo:{text}"
        ws.send(b"\x00\x01\x02")
        assert ws.recv(timeout=DEADLINE) == b"\x02\x01\x00"
        ws.send("close")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=DEADLINE)
    assert ws.close_code == 4001
    assert ws.close_reason == "bye"

    # A close from the client reaches the app with its code; the same instance serves HTTP.
    with websocket(chat, "/chat/ws/hall") as ws:
        assert ws.recv(timeout=DEADLINE) == "joined hall at /chat (1)"
        ws.close(code=4002)
    wait_for(lambda: 4002 in closes(chat, "/chat/closes"), DEADLINE, "the app saw code 4002")


def test_echo_at_the_function_path(chat: Platform) -> None:
    with websocket(chat, "/function/ws-chat/ws/room2") as ws:
        assert ws.recv(timeout=DEADLINE) == "joined room2 at /function/ws-chat (1)"
        ws.send("hi")
        assert ws.recv(timeout=DEADLINE) == "echo:hi"
    response = chat.get("/function/ws-chat/closes")
    assert response.status_code == 200, response.text


def test_a_native_function_refuses_the_upgrade(chat: Platform) -> None:
    for path in ("/plain", "/function/ws-plain"):
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(chat, path), open_timeout=DEADLINE)
        response = refused.value.response
        assert response.status_code == 400
        error = json.loads(response.body)["error"]
        assert error["code"] == "websocket_unsupported"
        assert "native" in error["message"]
    # Plain requests still reach it.
    assert chat.get("/plain").text == "plain"


def test_closing_before_accept_refuses_the_handshake(chat: Platform) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(chat, "/chat/refuse"), open_timeout=DEADLINE)
    assert refused.value.response.status_code == 403


def test_an_open_websocket_holds_the_function_slot(chat: Platform) -> None:
    with websocket(chat, "/function/ws-slot/ws/first") as first:
        assert first.recv(timeout=DEADLINE).startswith("joined first")
        second: dict[str, Any] = {}

        def open_second() -> None:
            try:
                with websocket(chat, "/function/ws-slot/ws/second") as ws:
                    second["greeting"] = ws.recv(timeout=DEADLINE)
            except Exception as exc:
                second["error"] = exc

        thread = threading.Thread(target=open_second)
        thread.start()
        try:
            status = wait_for(
                lambda: (
                    (s := chat.json_of("fn", "get", "--name", "ws-slot")["status"])["queued"] and s
                ),
                DEADLINE,
                "the second websocket queued",
            )
            assert (status["inflight"], status["instances"]) == (1, 1)
            assert not second
            first.send("still here")
            assert first.recv(timeout=DEADLINE) == "echo:still here"
        finally:
            first.close()
            thread.join(DEADLINE)
    assert second.get("greeting", second).startswith("joined second")
    wait_for(
        lambda: chat.json_of("fn", "get", "--name", "ws-slot")["status"]["inflight"] == 0,
        DEADLINE,
        "the slot given back",
    )

    # With a short queue timeout the second is answered 503 while the first is open.
    with websocket(chat, "/function/ws-busy/ws/first") as first:
        assert first.recv(timeout=DEADLINE).startswith("joined first")
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(chat, "/function/ws-busy/ws/second"), open_timeout=DEADLINE)
        response = refused.value.response
        assert response.status_code == 503
        assert json.loads(response.body)["error"]["code"] == "queue_timeout"
        assert response.headers["retry-after"] == "1"


def test_an_update_ends_websockets_on_old_instances(chat: Platform) -> None:
    with websocket(chat, "/function/ws-roll/ws/old") as ws:
        assert ws.recv(timeout=DEADLINE).endswith("(1)")
        chat.ok("fn", "update", "--name", "ws-roll", "--env-var", "VERSION=2")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=DEADLINE)
    assert ws.close_code == 1001
    with websocket(chat, "/function/ws-roll/ws/new") as ws:
        assert ws.recv(timeout=DEADLINE).endswith("(2)")


def test_an_idle_websocket_is_ended(chat: Platform) -> None:
    with websocket(chat, "/function/ws-idle/ws/quiet") as ws:
        assert ws.recv(timeout=DEADLINE).startswith("joined quiet")
        # Nothing either way for the function's --idle-timeout (2s): the router ends it.
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=DEADLINE)
    assert ws.close_code == 1001
