"""A whole ASGI app (FastAPI, Starlette, Quart, Django's ``asgi.application``, ...) as a function.

Each request is one ASGI ``http`` cycle, as uvicorn would run it. A response sent in one body
message is answered whole; one sent in several (``more_body``) is streamed, the app's ``send``
waiting while the router is behind. The lifespan protocol runs once per instance, before the
first request (``Handler.startup``). A websocket is one ``websocket`` session
(``fissile.runtime.websocket``).
"""

from __future__ import annotations

import asyncio
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from fissile.runtime import logs
from fissile.runtime.context import Context
from fissile.runtime.contracts._handler import Handler, Target
from fissile.runtime.contracts._mount import split_path
from fissile.runtime.request import Request
from fissile.runtime.response import Response

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

ASGI = {"version": "3.0", "spec_version": "2.4"}


class LifespanFailed(Exception):
    """The app answered ``lifespan.startup.failed``: the instance cannot serve it."""


def bind(target: Target) -> Handler:
    app: App = target.func
    lifespan = Lifespan(app)
    function = target.function

    async def invoke(request: Request, context: Context) -> Response:
        return await Cycle(app, http_scope(request, function, lifespan.state)).run(request.body)

    def websocket(request: Request) -> tuple[App, Scope]:
        return app, websocket_scope(request, function, lifespan.state)

    return Handler(
        app, "asgi", invoke, is_async=True, startup=lifespan.startup, websocket=websocket
    )


def http_scope(request: Request, function: str, state: dict[str, Any] | None = None) -> Scope:
    """The ASGI ``http`` scope of a request delivered by the router. ``path`` includes
    ``root_path``, as uvicorn gives it (frameworks strip it for routing)."""
    scope = base_scope(request, function, state)
    scope["type"] = "http"
    scope["method"] = request.method
    scope["scheme"] = request.headers.get("x-forwarded-proto", "http")
    return scope


def websocket_scope(request: Request, function: str, state: dict[str, Any] | None = None) -> Scope:
    """The ASGI ``websocket`` scope of an upgrade request delivered by the router."""
    scope = base_scope(request, function, state)
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if request.headers.get("x-forwarded-proto") == "https" else "ws"
    offered = request.headers.get("sec-websocket-protocol", "")
    scope["subprotocols"] = [name.strip() for name in offered.split(",") if name.strip()]
    return scope


def base_scope(request: Request, function: str, state: dict[str, Any] | None) -> Scope:
    """What the ``http`` and ``websocket`` scopes share."""
    root, path = split_path(request, function)
    headers = request.headers
    client = headers.get("x-forwarded-for", "").split(",")[0].strip()
    host, _, port = headers.get("host", "").rpartition(":")
    scope: Scope = {
        "asgi": ASGI,
        "http_version": "1.1",
        "path": path.encode("latin-1").decode("utf-8", "replace"),
        "raw_path": request.path.encode("latin-1"),
        "query_string": request.query_string.encode("latin-1"),
        "root_path": root.encode("latin-1").decode("utf-8", "replace"),
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "client": (client, 0) if client else None,
        "server": (host, int(port)) if host and port.isdigit() else None,
    }
    if state is not None:
        # Each request gets its own shallow copy of what the lifespan stored (ASGI's state).
        scope["state"] = dict(state)
    return scope


class Cycle:
    """One request/response exchange with the app."""

    def __init__(self, app: App, scope: Scope) -> None:
        self.app = app
        self.scope = scope
        self.body: bytes | None = None
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.stream: _Body | None = None
        self.answered: asyncio.Future[Response] | None = None
        self.finished = asyncio.Event()  # the response is complete, or the router left

    async def run(self, body: bytes) -> Response:
        self.body = body
        loop = asyncio.get_running_loop()
        self.answered = loop.create_future()
        task = loop.create_task(self._app())
        try:
            return await self.answered
        except BaseException:
            task.cancel()
            raise

    async def _app(self) -> None:
        assert self.answered is not None
        try:
            await self.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if not self.answered.done():
                self.answered.set_exception(exc)
            elif self.stream is not None and not self.finished.is_set():
                self.stream.end(exc)
            elif not isinstance(exc, asyncio.CancelledError) and not (
                self.stream is not None and self.stream.closed
            ):
                # After a complete response (a background task): only the log can tell.
                logs.error("".join(traceback.format_exception(exc)))
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
            return
        if not self.answered.done():
            self.answered.set_exception(RuntimeError("the ASGI app returned without a response"))
        elif self.stream is not None and not self.finished.is_set():
            self.stream.end(RuntimeError("the ASGI app returned before its response's end"))

    async def receive(self) -> Message:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        # Frameworks listen for a disconnect while they stream: it comes once the response is
        # over or the router has gone away.
        await self.finished.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.finished.is_set():
            if self.stream is not None and self.stream.closed:
                raise OSError("the client went away")
            return
        if kind == "http.response.start":
            if self.status:
                raise RuntimeError("http.response.start sent twice")
            self.status = int(message["status"])
            self.headers = [
                (bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
                for k, v in message.get("headers", ())
            ]
        elif kind == "http.response.body":
            if not self.status:
                raise RuntimeError("http.response.body sent before http.response.start")
            chunk = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if self.stream is not None:
                await self.stream.put(chunk)
                if not more:
                    self.stream.end()
                    self.finished.set()
                return
            if more:
                self.stream = _Body(self.finished)
                if chunk:
                    await self.stream.put(chunk)
                self._answer(Response(self.stream, self.status))
                return
            self._answer(Response(chunk, self.status))
            self.finished.set()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in an http cycle")

    def _answer(self, response: Response) -> None:
        # The app's headers exactly as sent: no default content type added.
        response.headers = self.headers
        assert self.answered is not None
        if not self.answered.done():
            self.answered.set_result(response)


class _Body:
    """A streamed response body: the app puts chunks, the server takes them. One chunk is held
    at most, so the app's ``send`` waits while the router (and the client) are behind."""

    def __init__(self, finished: asyncio.Event) -> None:
        self.finished = finished
        self.chunks: deque[bytes] = deque()
        self.ended = False
        self.error: BaseException | None = None
        self.closed = False
        self.readable = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()

    async def put(self, chunk: bytes) -> None:
        while self.chunks and not self.closed:
            self.writable.clear()
            await self.writable.wait()
        if self.closed:
            raise OSError("the client went away")
        if chunk:
            self.chunks.append(chunk)
            self.readable.set()

    def end(self, error: BaseException | None = None) -> None:
        self.ended = True
        self.error = error
        self.readable.set()

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        while not self.chunks:
            if self.error is not None:
                raise self.error
            if self.ended:
                raise StopAsyncIteration
            self.readable.clear()
            await self.readable.wait()
        chunk = self.chunks.popleft()
        self.writable.set()
        return chunk

    async def aclose(self) -> None:
        """The server is done with the body (ended, failed, or the client left)."""
        self.closed = True
        self.writable.set()
        self.finished.set()


class Lifespan:
    """The ASGI lifespan protocol, once per instance. An app that does not speak it (raises
    on the ``lifespan`` scope, or returns) is served without it, as uvicorn's ``auto`` does;
    one that answers ``lifespan.startup.failed`` fails the load."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.state: dict[str, Any] | None = None
        self.task: asyncio.Task[None] | None = None
        self.shutdown_requested = asyncio.Event()
        self.replies: asyncio.Queue[Message] = asyncio.Queue()
        self.sent_startup = False

    async def startup(self) -> None:
        state: dict[str, Any] = {}
        scope: Scope = {"type": "lifespan", "asgi": ASGI, "state": state}
        self.task = asyncio.get_running_loop().create_task(self._run(scope))
        reply = await self.replies.get()
        if reply["type"] == "lifespan.startup.failed":
            # Starlette sends the whole traceback: that is for the function's log; the load's
            # error names its last line.
            message = str(reply.get("message") or "").strip()
            if "\n" in message:
                logs.error(message)
            lines = message.splitlines()
            raise LifespanFailed(lines[-1] if lines else "lifespan.startup.failed")
        if reply["type"] == "lifespan.startup.complete":
            self.state = state

    async def _run(self, scope: Scope) -> None:
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if self.replies.empty() and self.state is None:
                # Unsupported lifespan (uvicorn's "auto"): serve without it.
                self.replies.put_nowait({"type": "unsupported", "error": exc})
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
        else:
            self.replies.put_nowait({"type": "unsupported"})

    async def _receive(self) -> Message:
        if not self.sent_startup:
            self.sent_startup = True
            return {"type": "lifespan.startup"}
        await self.shutdown_requested.wait()
        return {"type": "lifespan.shutdown"}

    async def _send(self, message: Message) -> None:
        self.replies.put_nowait(message)
