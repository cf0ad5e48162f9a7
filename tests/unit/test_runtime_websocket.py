"""The instance's websocket adapter (fissile.runtime.websocket) on a fake transport: an upgrade
request through the instance server's connection, frames from the websockets library's own
client protocol."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from fissile.runtime import websocket
from fissile.runtime.contracts import bind
from fissile.runtime.server import HttpConnection, InstanceApp

UPGRADE = (
    b"GET /function/chat/ws/room1?x=1 HTTP/1.1\r\nhost: example.test\r\n"
    b"upgrade: websocket\r\nconnection: upgrade\r\n"
    b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n"
    b"sec-websocket-protocol: chat, superchat\r\n"
    b"x-fissile-function: chat\r\ncontent-length: 0\r\n\r\n"
)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.protocol: asyncio.BaseProtocol | None = None
        self.written = bytearray()
        self.closed = False
        self.reading = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def write(self, data: Any) -> None:
        assert not self.closed, "write after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def take(self) -> bytes:
        data = bytes(self.written)
        self.written.clear()
        return data


class Peer:
    """The client's side: an upgrade through the instance server, then frames."""

    def __init__(self, app: Any, contract: str = "asgi") -> None:
        instance = InstanceApp("token")
        instance.function = "chat"
        instance.handler = bind(app, "chat", contract=contract)
        self.transport = FakeTransport()
        conn = HttpConnection(instance)
        self.transport.protocol = conn
        conn.connection_made(self.transport)
        self.client = ClientProtocol(parse_uri("ws://example.test/"), state=State.OPEN)

    def upgrade(self, extra: bytes = b"") -> None:
        protocol = self.transport.protocol
        assert isinstance(protocol, asyncio.Protocol)
        protocol.data_received(UPGRADE + extra)

    @property
    def session(self) -> websocket.Session:
        protocol = self.transport.protocol
        assert isinstance(protocol, websocket.Session)
        return protocol

    def send(self, frame: Frame) -> None:
        self.client.send_frame(frame)
        self.session.data_received(b"".join(self.client.data_to_send()))

    def frames(self) -> list[Frame]:
        self.client.receive_data(self.transport.take())
        return [event for event in self.client.events_received() if isinstance(event, Frame)]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def head(data: bytes) -> tuple[int, dict[str, str], bytes]:
    raw, _, rest = data.partition(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, rest


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    scopes.append(scope)
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept", "subprotocol": "chat", "headers": [(b"x-a", b"1")]})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            disconnects.append(message)
            return
        if message.get("text") == "bye":
            await send({"type": "websocket.close", "code": 4000, "reason": "done"})
            continue
        await send({**message, "type": "websocket.send"})


scopes: list[dict[str, Any]] = []
disconnects: list[dict[str, Any]] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    scopes.clear()
    disconnects.clear()


async def test_accept_echo_and_close_from_the_client() -> None:
    peer = Peer(echo)
    peer.upgrade()
    await settle()
    status, headers, rest = head(peer.transport.take())
    assert status == 101
    assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert headers["sec-websocket-protocol"] == "chat"
    assert headers["x-a"] == "1"
    assert rest == b""
    scope = scopes[0]
    assert scope["type"] == "websocket"
    assert scope["path"] == "/function/chat/ws/room1"
    assert scope["root_path"] == "/function/chat"
    assert scope["query_string"] == b"x=1"
    assert scope["subprotocols"] == ["chat", "superchat"]
    assert scope["scheme"] == "ws"

    peer.send(Frame(Opcode.TEXT, "héllo".encode()))
    peer.send(Frame(Opcode.BINARY, b"\x00\x01", fin=False))
    peer.send(Frame(Opcode.CONT, b"\x02"))
    await settle()
    frames = peer.frames()
    assert [(f.opcode, f.data) for f in frames] == [
        (Opcode.TEXT, "héllo".encode()),
        (Opcode.BINARY, b"\x00\x01\x02"),
    ]
    peer.send(Frame(Opcode.PING, b"p"))
    assert [(f.opcode, f.data) for f in peer.frames()] == [(Opcode.PONG, b"p")]

    peer.client.send_close(1000, "client done")
    peer.session.data_received(b"".join(peer.client.data_to_send()))
    await settle()
    assert disconnects == [{"type": "websocket.disconnect", "code": 1000, "reason": "client done"}]
    assert peer.transport.closed  # the server closes once the closing handshake is done


async def test_app_closes_with_a_code() -> None:
    peer = Peer(echo)
    peer.upgrade()
    await settle()
    peer.transport.take()
    peer.send(Frame(Opcode.TEXT, b"bye"))
    await settle()
    (close,) = peer.frames()
    assert close.opcode is Opcode.CLOSE
    assert peer.client.close_rcvd is not None and peer.client.close_rcvd.code == 4000
    peer.session.data_received(b"".join(peer.client.data_to_send()))  # the client's answer
    await settle()
    assert peer.transport.closed
    assert disconnects[0]["code"] == 4000


async def test_message_past_the_limit_closes_with_1009() -> None:
    peer = Peer(echo)
    peer.upgrade()
    await settle()
    peer.transport.take()
    peer.send(Frame(Opcode.BINARY, b"x" * (websocket.MAX_MESSAGE + 1)))
    await settle()
    assert [f.opcode for f in peer.frames()] == [Opcode.CLOSE]
    assert peer.client.close_rcvd is not None and peer.client.close_rcvd.code == 1009
    assert peer.transport.closed
    peer.session.connection_lost(None)
    await settle()
    assert disconnects[0]["code"] == 1009


async def test_fragmented_message_past_the_limit_closes_with_1009() -> None:
    peer = Peer(echo)
    peer.upgrade()
    await settle()
    peer.transport.take()
    half = websocket.MAX_MESSAGE // 2 + 1
    peer.send(Frame(Opcode.TEXT, b"x" * half, fin=False))
    peer.send(Frame(Opcode.CONT, b"x" * half))
    await settle()
    peer.frames()
    assert peer.client.close_rcvd is not None and peer.client.close_rcvd.code == 1009


async def test_close_before_accept_is_403() -> None:
    async def refuse(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close"})

    peer = Peer(refuse)
    peer.upgrade()
    await settle()
    status, _, body = head(peer.transport.take())
    assert status == 403
    assert json.loads(body)["error"]["code"] == "websocket_refused"
    assert peer.transport.closed


async def test_error_before_accept_is_500_and_after_it_1011(capsys: Any) -> None:
    async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        if scope["path"].endswith("room1"):
            raise ValueError("no room")

    peer = Peer(broken)
    peer.upgrade()
    await settle()
    status, _, body = head(peer.transport.take())
    assert status == 500
    assert json.loads(body)["error"] == {"code": "function_error", "message": "ValueError: no room"}

    async def silent(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()

    peer = Peer(silent)
    peer.upgrade()
    await settle()
    status, _, body = head(peer.transport.take())
    assert status == 500
    message = json.loads(body)["error"]["message"]
    assert message == "the ASGI app returned without accepting the websocket"

    async def late(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            raise ValueError("boom")

    peer = Peer(late)
    peer.upgrade()
    await settle()
    status, _, rest = head(peer.transport.take())
    assert status == 101
    peer.transport.written += rest  # the close frame followed the 101 at once
    peer.frames()
    assert peer.client.close_rcvd is not None and peer.client.close_rcvd.code == 1011
    assert "ValueError: boom" in capsys.readouterr().err


async def test_router_half_close_sends_going_away() -> None:
    peer = Peer(echo)
    peer.upgrade()
    await settle()
    peer.transport.take()
    peer.session.eof_received()
    await settle()
    peer.frames()
    assert peer.client.close_rcvd is not None and peer.client.close_rcvd.code == 1001
    assert disconnects[0]["code"] == 1001


async def test_non_asgi_function_refuses_the_upgrade() -> None:
    def main(request: Any) -> str:
        return "hi"

    peer = Peer(main, contract="native")
    peer.upgrade()
    await settle()
    status, _, body = head(peer.transport.take())
    assert status == 400
    error = json.loads(body)["error"]
    assert error["code"] == "websocket_unsupported"
    assert "native" in error["message"]
    assert peer.transport.closed


async def test_bad_handshake_is_refused_before_the_app_runs() -> None:
    peer = Peer(echo)
    protocol = peer.transport.protocol
    assert isinstance(protocol, asyncio.Protocol)
    protocol.data_received(
        UPGRADE.replace(b"sec-websocket-version: 13", b"sec-websocket-version: 8")
    )
    await settle()
    status, _, body = head(peer.transport.take())
    assert status == 400
    assert b"Sec-WebSocket-Version" in body  # the library's reason
    assert scopes == []


async def test_reading_pauses_while_the_app_is_behind() -> None:
    release = asyncio.Event()

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()
        while (await receive())["type"] != "websocket.disconnect":
            pass

    peer = Peer(slow)
    peer.upgrade()
    await settle()
    peer.transport.take()
    chunk = b"x" * (websocket.MAX_MESSAGE // 4)
    for _ in range(5):
        peer.send(Frame(Opcode.BINARY, chunk))
    assert not peer.transport.reading
    release.set()
    await settle()
    assert peer.transport.reading
