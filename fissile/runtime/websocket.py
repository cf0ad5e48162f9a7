"""Websockets inside an instance: an upgrade request becomes one ASGI ``websocket`` session,
framed by the ``websockets`` library's sans-I/O protocol (handshake checks, masking, control
frames, ping/pong, the closing handshake and the message size limit are the library's).

The router sends each websocket on a connection of its own and, after the 101, pipes bytes
between the client and this connection, so the session owns the connection until it closes.
The library is imported when an instance opens its first websocket, not in the zygote.
"""

from __future__ import annotations

import asyncio
import json
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from fissile.runtime import logs
from fissile.runtime._flow import WriteFlow
from fissile.runtime.contracts._handler import Handler
from fissile.runtime.request import Request

if TYPE_CHECKING:
    from websockets.http11 import Request as Handshake
    from websockets.server import ServerProtocol
    from websockets.typing import Subprotocol

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Largest message (or frame) a client may send; past it the websocket is closed with 1009.
MAX_MESSAGE = 1 << 20
#: Bytes of received messages the app has not taken yet before the connection stops being
#: read (the client's sends then wait in the kernel's buffers and its own).
MAX_QUEUED = MAX_MESSAGE
#: Seconds the closing handshake may take before the connection is simply closed.
CLOSE_TIMEOUT = 5.0
GOING_AWAY = 1001
ABNORMAL = 1006
# The headers the library's handshake reads; the app sees all of them in its scope. Passing
# only these keeps the library's own line and count limits off the client's other headers.
_HANDSHAKE = (
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
)


class ClientDisconnected(OSError):
    """``send`` on a websocket that has closed (what uvicorn raises, which frameworks expect)."""


def is_websocket(headers: dict[str, str]) -> bool:
    return "websocket" in headers.get("upgrade", "").lower()


def handshake(request: Request) -> bytes:
    """The upgrade request for the library's handshake parser: its handshake headers only."""
    lines = ["GET / HTTP/1.1"]
    lines += [f"{name}: {request.headers[name]}" for name in _HANDSHAKE if name in request.headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Session(WriteFlow):
    """One websocket: the transport's protocol from the upgrade on, and the ASGI ``receive``
    and ``send`` of the app's ``websocket`` scope."""

    def __init__(self, transport: asyncio.Transport, app: App, scope: Scope) -> None:
        from websockets.server import ServerProtocol

        self.transport: asyncio.Transport | None = transport
        self.app = app
        self.scope = scope
        self.subprotocol: Subprotocol | None = None

        def select(protocol: ServerProtocol, offered: Sequence[Subprotocol]) -> Subprotocol | None:
            # The app chooses, in its websocket.accept (ASGI leaves checking the offer to it).
            return self.subprotocol

        self.ws: ServerProtocol = ServerProtocol(max_size=MAX_MESSAGE, select_subprotocol=select)
        self.request: Handshake | None = None
        self.connected = False  # the app has had websocket.connect
        self.accepted = False
        self.refused = False  # closed before accepting: answered 403
        self.incoming: deque[tuple[Message, int]] = deque()
        self.queued = 0  # bytes in ``incoming``
        self.reading_paused = False
        self.readable: asyncio.Future[None] | None = None
        self.writable: asyncio.Future[None] | None = None
        self.disconnect: Message | None = None  # once the websocket has closed
        self.fragments: list[bytes] = []
        self.text = False  # the fragmented message being received is text
        self.close_timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self, request: Request, rest: bytes) -> None:
        """Check the handshake, then run the app (which accepts or refuses it)."""
        self.ws.receive_data(handshake(request))
        events = self.ws.events_received()
        self.request = events[0] if events else None  # type: ignore[assignment]
        if self.request is None:
            self._respond(400, "bad websocket handshake")
            return
        check = self.ws.accept(self.request)
        if check.status_code != 101:
            self.ws.send_response(check)  # the library's 400 naming what is wrong
            self._flush()
            return
        if rest:
            # A client may not send before the 101: nothing here is a frame yet.
            self._respond(400, "data before the websocket handshake completed")
            return
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            await self.app(self.scope, self.receive, self.send)
        except Exception as exc:
            logs.error("".join(traceback.format_exception(exc)))
            if not self.accepted and not self.refused:
                message = f"{type(exc).__name__}: {exc}"
                self._respond(500, message, "function_error")
            else:
                self._close(1011)
            return
        if not self.accepted and not self.refused:
            message = "the ASGI app returned without accepting the websocket"
            self._respond(500, message, "function_error")
        else:
            self._close(1000)

    # -- ASGI ---------------------------------------------------------------------------

    async def receive(self) -> Message:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        while not self.incoming:
            if self.disconnect is not None:
                return self.disconnect
            self.readable = asyncio.get_running_loop().create_future()
            await self.readable
        message, size = self.incoming.popleft()
        self.queued -= size
        if self.reading_paused and self.queued <= MAX_QUEUED // 2 and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            if self.accepted or self.refused or self.disconnect is not None:
                raise RuntimeError("websocket.accept sent twice or after the websocket closed")
            self._accept(message)
        elif kind == "websocket.close" and not self.accepted:
            if self.refused:
                raise RuntimeError("websocket.close sent twice")
            self.refused = True
            self._respond(403, "the function refused the websocket", "websocket_refused")
        elif self.disconnect is not None or self.transport is None:
            raise ClientDisconnected("the websocket has closed")
        elif not self.accepted:
            raise RuntimeError(f"{kind!r} sent before websocket.accept")
        elif kind == "websocket.send":
            text = message.get("text")
            if text is not None:
                self.ws.send_text(text.encode())
            else:
                self.ws.send_binary(bytes(message.get("bytes") or b""))
            self._flush()
            while self.writable is not None:
                await self.writable
        elif kind == "websocket.close":
            self._close(int(message.get("code") or 1000), str(message.get("reason") or ""))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in a websocket session")

    def _accept(self, message: Message) -> None:
        assert self.request is not None
        self.subprotocol = message.get("subprotocol")
        response = self.ws.accept(self.request)
        for name, value in message.get("headers") or ():
            response.headers[bytes(name).decode("latin-1")] = bytes(value).decode("latin-1")
        self.ws.send_response(response)
        self.accepted = response.status_code == 101
        self._flush()

    # -- asyncio.Protocol ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self.accepted:
            return  # only a misbehaving client sends before the 101
        self.ws.receive_data(data)
        for frame in self.ws.events_received():
            self._frame(frame)
        self._flush()
        transport = self.transport
        if self.queued > MAX_QUEUED and not self.reading_paused and transport is not None:
            self.reading_paused = True
            if not transport.is_closing():
                transport.pause_reading()

    def eof_received(self) -> bool | None:
        # The router ends a websocket by closing its half of the connection (the function
        # was updated or deleted, the websocket sat idle, the platform stops): the client
        # is told the server is going away, and the app that it has gone.
        if self.accepted and self.disconnect is None:
            self._close(GOING_AWAY)
            self._closed(GOING_AWAY, "")
        return None  # the transport closes once what is written has gone

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.close_timer is not None:
            self.close_timer.cancel()
        code = ABNORMAL
        if self.ws.close_rcvd is not None:
            code = self.ws.close_rcvd.code
        elif self.ws.close_sent is not None:
            code = self.ws.close_sent.code
        self._closed(code, "")
        self.resume_writing()

    # -- frames -------------------------------------------------------------------------

    def _frame(self, frame: Any) -> None:
        from websockets.frames import Opcode

        opcode = frame.opcode
        if opcode is Opcode.CLOSE:
            close = self.ws.close_rcvd
            if close is not None:
                self._closed(close.code, close.reason)
            return
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            self.fragments = [frame.data]
            self.text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            self.fragments.append(frame.data)
        else:
            return  # ping and pong: answered by the library
        if not frame.fin:
            return
        data = b"".join(self.fragments)
        self.fragments = []
        if self.text:
            try:
                self._deliver({"type": "websocket.receive", "text": data.decode()}, len(data))
            except UnicodeDecodeError:
                self.ws.fail(1007, "invalid UTF-8 in a text message")
                self._closed(1007, "")
        else:
            self._deliver({"type": "websocket.receive", "bytes": data}, len(data))

    def _deliver(self, message: Message, size: int) -> None:
        self.incoming.append((message, size))
        self.queued += size
        self._wake()

    def _closed(self, code: int, reason: str) -> None:
        if self.disconnect is None:
            self.disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._wake()

    def _wake(self) -> None:
        readable, self.readable = self.readable, None
        if readable is not None and not readable.done():
            readable.set_result(None)

    # -- writing ------------------------------------------------------------------------

    def _close(self, code: int, reason: str = "") -> None:
        from websockets.protocol import State

        if self.ws.state is State.OPEN:
            self.ws.send_close(code, reason)
            self._flush()
        if self.transport is not None and self.close_timer is None:
            # A client that never answers the close is not waited for.
            self.close_timer = asyncio.get_running_loop().call_later(
                CLOSE_TIMEOUT, self.transport.close
            )

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            self.ws.data_to_send()
            return
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            else:
                # The library's end of stream: the websocket is over.
                transport.close()
                return

    def _respond(self, status: int, message: str, code: str = "websocket_refused") -> None:
        """Answer the upgrade with an HTTP error instead of a 101, and close."""
        transport = self.transport
        if transport is None:
            return
        transport.write(error_response(status, code, message))
        transport.close()


def error_response(status: int, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 response carrying fissile's JSON error, closing the connection."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    phrase = HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def upgrade(
    transport: asyncio.Transport,
    handler: Handler | None,
    function: str,
    request: Request,
    rest: bytes,
) -> None:
    """Serve an upgrade request (the connection's only request) as a websocket, or refuse it
    with fissile's JSON error when the function does not serve websockets."""
    if handler is None:
        refusal = error_response(503, "not_specialized", "this instance has no function yet")
    elif handler.websocket is None or not is_websocket(request.headers):
        message = (
            f"function {function} ({handler.contract} contract) does not serve websockets:"
            " only whole ASGI apps (--contract asgi) do"
        )
        refusal = error_response(400, "websocket_unsupported", message)
    else:
        app, scope = handler.websocket(request)
        session = Session(transport, app, scope)
        transport.set_protocol(session)
        session.start(request, rest)
        return
    transport.write(refusal)
    transport.close()
