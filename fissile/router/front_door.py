"""The router's asynchronous front door and the invocation endpoints of the data plane.

``POST /async-function/<name>[/...]`` and any call with ``Prefer: respond-async`` (RFC 7240)
are stored and answered ``202 Accepted`` at once; ``/invocations/<id>`` serves the record, the
raw result, server-sent events and a websocket that pushes each status change and then the
result. An id is 128 random bits: holding it is what grants access, as with a pre-signed URL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fissile.invocations.callbacks import check_callback_url
from fissile.invocations.errors import InvocationError
from fissile.invocations.records import CLOSING, Invocation
from fissile.router.forwarded import prefix_of
from fissile.router.proxy import Answer
from fissile.store.space import StorageFull

if TYPE_CHECKING:
    from fissile.invocations.service import Invocations

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

INVOCATIONS_PREFIX = "/invocations/"
# Sent on an open SSE stream while nothing happens, so proxies do not time it out.
SSE_KEEPALIVE = 15.0

_JSON = (b"content-type", b"application/json")


class FrontDoor:
    def __init__(self, invocations: Invocations) -> None:
        self.invocations = invocations

    # -- accepting ----------------------------------------------------------------------

    async def accept(
        self,
        scope: Scope,
        send: Send,
        function: str,
        headers: list[tuple[str, str]],
        body: bytes,
        callback_url: str | None,
    ) -> None:
        if callback_url is not None:
            problem = check_callback_url(callback_url)
            if problem is not None:
                await _error(send, 400, "bad_callback_url", problem)
                return
        target: bytes = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        try:
            invocation = self.invocations.submit(
                function,
                scope["method"],
                target.decode("latin-1"),
                headers,
                body,
                callback_url,
            )
        except InvocationError as exc:
            await _error(send, exc.status, exc.code, exc.message)
            return
        except StorageFull as exc:
            await _error(send, 507, "storage_full", str(exc))
            return
        links = _links(scope, invocation.id)
        document = {"id": invocation.id, "status": str(invocation.status), **links}
        await _send(
            send,
            202,
            json.dumps(document).encode(),
            [
                _JSON,
                (b"location", f"{prefix_of(scope)}/invocations/{invocation.id}".encode()),
                (b"preference-applied", b"respond-async"),
            ],
        )

    # -- /invocations/<id>[/result|/events|/ws] -------------------------------------------

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        invocation_id, what = _split(scope["path"])
        method = scope["method"]
        allowed = {"": ("GET", "DELETE"), "result": ("GET",), "events": ("GET",)}.get(what)
        if allowed is None:
            await _error(send, 404, "no_route", f"no route for {method} {scope['path']}")
            return
        if method not in allowed and not (method == "HEAD" and "GET" in allowed):
            await _error(
                send,
                405,
                "method_not_allowed",
                f"{method} is not allowed on {scope['path']}",
                [(b"allow", ", ".join(allowed).encode())],
            )
            return
        if method == "DELETE":
            try:
                invocation = await self.invocations.cancel(invocation_id)
            except InvocationError as exc:
                await _error(send, exc.status, exc.code, exc.message)
                return
            await self._document(scope, send, invocation)
            return
        if what == "events":
            await self._events(scope, invocation_id, receive, send)
            return
        found = self.invocations.get(invocation_id)
        if found is None:
            await _not_found(send, invocation_id)
        elif what == "result":
            await self._result(send, found)
        else:
            await self._document(scope, send, found)

    async def _document(self, scope: Scope, send: Send, invocation: Invocation) -> None:
        document = {**invocation.to_json(), **_links(scope, invocation.id)}
        await _send(send, 200, json.dumps(document).encode(), [_JSON])

    async def _result(self, send: Send, invocation: Invocation) -> None:
        response = invocation.response
        if response is None or not invocation.final:
            if invocation.final:
                message = f"invocation {invocation.id} ended {invocation.status} without a response"
                if invocation.error:
                    message += f": {invocation.error}"
            else:
                message = f"invocation {invocation.id} is {invocation.status}; no result yet"
            await _error(send, 409, "no_result", message, [(b"retry-after", b"1")])
            return
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in response.headers
            if name.lower() not in ("content-length", "transfer-encoding", "connection")
        ]
        headers.append((b"x-fissile-invocation-status", str(invocation.status).encode()))
        await _send(send, response.status, response.body, headers)

    async def _events(self, scope: Scope, invocation_id: str, receive: Receive, send: Send) -> None:
        queue = self.invocations.watch(invocation_id)
        try:
            current = self.invocations.get(invocation_id)
            if current is None:
                await _not_found(send, invocation_id)
                return
            if current.final and _header(scope, b"last-event-id") == b"result":
                # A browser's EventSource reconnects whenever a stream ends; after the result
                # was delivered, 204 is what tells it to stop.
                await _send(send, 204, b"", [])
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream"),
                        (b"cache-control", b"no-cache"),
                    ],
                }
            )
            try:
                async for kind, document in _updates(current, queue, receive, SSE_KEEPALIVE):
                    if kind == "keepalive":
                        chunk = b": keepalive\n\n"
                    else:
                        data = json.dumps(document)
                        chunk = f"id: {kind}\nevent: {kind}\ndata: {data}\n\n".encode()
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except _Disconnected:
                return
            except _Closing:
                # EventSource reconnects after `retry` ms: by then the platform may be back.
                chunk = b"event: closing\nretry: 1000\ndata: {}\n\n"
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            self.invocations.unwatch(invocation_id, queue)

    # -- the websocket --------------------------------------------------------------------

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        invocation_id, what = _split(scope["path"])
        if what != "ws":
            await send({"type": "websocket.close", "code": 1008})
            return
        queue = self.invocations.watch(invocation_id)
        try:
            current = self.invocations.get(invocation_id)
            if current is None:
                # Refused before the handshake completes: the client sees a 403.
                await send({"type": "websocket.close", "code": 1008})
                return
            await send({"type": "websocket.accept"})
            async for kind, document in _updates(current, queue, receive, None):
                text = json.dumps({"event": kind, "invocation": document})
                await send({"type": "websocket.send", "text": text})
            await send({"type": "websocket.close", "code": 1000})
        except _Closing:
            await send({"type": "websocket.close", "code": 1001})  # going away
        except _Disconnected:
            pass
        finally:
            self.invocations.unwatch(invocation_id, queue)


class _Disconnected(Exception):
    pass


class _Closing(Exception):
    """The platform is stopping: end the stream cleanly, the client can come back."""


async def _updates(
    current: Invocation,
    queue: asyncio.Queue[dict[str, Any]],
    receive: Receive,
    keepalive: float | None,
) -> Any:
    """Yield ("status", doc) for the current state and each change, then ("result", doc);
    stop early if the client goes away."""
    document = current.to_json()
    if current.final:
        yield "result", document
        return
    yield "status", document
    gone = asyncio.ensure_future(_disconnect(receive))
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait(
                {getter, gone}, timeout=keepalive, return_when=asyncio.FIRST_COMPLETED
            )
            if gone in done:
                getter.cancel()
                raise _Disconnected
            if getter not in done:
                getter.cancel()
                yield "keepalive", {}
                continue
            document = getter.result()
            if document is CLOSING:
                raise _Closing
            if document["status"] in ("queued", "running"):
                yield "status", document
            else:
                yield "result", document
                return
    finally:
        gone.cancel()


async def _disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] in ("http.disconnect", "websocket.disconnect"):
            return


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return None


def _split(path: str) -> tuple[str, str]:
    rest = path[len(INVOCATIONS_PREFIX) :]
    invocation_id, _, what = rest.partition("/")
    return invocation_id, what.rstrip("/")


def _links(scope: Scope, invocation_id: str) -> dict[str, str]:
    host = "localhost"
    for name, value in scope["headers"]:
        if name == b"host":
            host = value.decode("latin-1")
            break
    scheme = scope.get("scheme", "http")
    ws = "wss" if scheme == "https" else "ws"
    # Behind a trusted proxy, its scheme, host and prefix (fissile/router/forwarded.py).
    path = f"{prefix_of(scope)}/invocations/{invocation_id}"
    base = f"{scheme}://{host}{path}"
    return {
        "status_url": base,
        "result_url": f"{base}/result",
        "events_url": f"{base}/events",
        "ws_url": f"{ws}://{host}{path}/ws",
    }


async def _not_found(send: Send, invocation_id: str) -> None:
    await _error(send, 404, "invocation_not_found", f"invocation {invocation_id!r} not found")


async def _error(
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    answer = Answer(status, code, message, headers)  # the router's own error envelope
    await _send(send, answer.status, answer.body, answer.headers)


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
