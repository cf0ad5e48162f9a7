"""Fission's python-fastapi environment: ``main(request: fastapi.Request)``, sync or async.

Fission's server is a FastAPI app with one catch-all route that calls the function with the
route's ``Request`` and returns what it returns; FastAPI then sends a ``Response`` as it is and
encodes anything else as JSON (``jsonable_encoder``: a ``str`` is a JSON string). A
``HTTPException`` becomes FastAPI's ``{"detail": ...}`` answer. Here the ``Request`` is built
straight from the instance's request (an ASGI scope and a ``receive``), without an app.
"""

from __future__ import annotations

import asyncio
import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse
from starlette.responses import StreamingResponse

from fissile.runtime.context import Context
from fissile.runtime.contracts._handler import Handler, Target, required_positional
from fissile.runtime.request import Request
from fissile.runtime.response import Response


def bind(target: Target) -> Handler:
    func = target.func
    arity = required_positional(func)
    if arity != 1:
        raise TypeError(
            f"{getattr(func, '__name__', func)!r} takes {arity} arguments;"
            " a Fission FastAPI function is main(request: fastapi.Request)"
        )
    if inspect.iscoroutinefunction(func):

        async def invoke_async(request: Request, context: Context) -> Response:
            scope = _scope(request)
            try:
                value = await func(StarletteRequest(scope, _receive(request.body)))
            except HTTPException as exc:
                value = _http_exception(exc)
            return await _to_response(value, scope)

        return Handler(func, "fission-fastapi", invoke_async, is_async=True)

    # A sync function stays sync (Fission's server calls it on its loop, blocking it): the
    # platform then gives its instances one call at a time and scales out, as for any def.
    def invoke(request: Request, context: Context) -> Response:
        scope = _scope(request)
        try:
            value = func(StarletteRequest(scope, _receive(request.body)))
        except HTTPException as exc:
            value = _http_exception(exc)
        return _to_response_sync(value, scope)

    return Handler(func, "fission-fastapi", invoke, is_async=False)


def _scope(request: Request) -> dict[str, Any]:
    headers = request.headers
    host, _, port = headers.get("host", "fissile").partition(":")
    scheme = headers.get("x-forwarded-proto", "http")
    client = headers.get("x-forwarded-for", "127.0.0.1").split(",")[0].strip()
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": scheme,
        "path": request.path,
        "raw_path": request.path.encode("utf-8"),
        "root_path": "",
        "query_string": request.query_string.encode("latin-1"),
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "client": (client, 0),
        "server": (host, int(port) if port.isdigit() else (443 if scheme == "https" else 80)),
        "path_params": dict(request.params),
    }


def _receive(body: bytes) -> Any:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        # The client stays until the response is sent (a disconnect closes the instance's
        # connection, which ends the call anyway).
        await asyncio.get_running_loop().create_future()
        return {"type": "http.disconnect"}  # pragma: no cover - never reached

    return receive


def _http_exception(exc: HTTPException) -> StarletteResponse:
    """FastAPI's default answer to an ``HTTPException``."""
    headers = getattr(exc, "headers", None)
    if exc.status_code in (204, 304):
        return StarletteResponse(status_code=exc.status_code, headers=headers)
    from fastapi.responses import JSONResponse

    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def _to_response_sync(value: Any, scope: dict[str, Any]) -> Response:
    if isinstance(value, StarletteResponse) and not isinstance(value, StreamingResponse):
        body = getattr(value, "body", None)
        if isinstance(body, bytes) and value.background is None:
            return Response(body, value.status_code, _headers(value.raw_headers))
        # A FileResponse, or a background task to run after the body: the response runs as the
        # ASGI app it is, on a loop of its own (the instance's may be this thread's).
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, _to_response(value, scope)).result()
    if isinstance(value, StreamingResponse):
        return _streamed(value)
    from fastapi.encoders import jsonable_encoder
    from fastapi.responses import JSONResponse

    encoded = JSONResponse(jsonable_encoder(value))
    return Response(encoded.body, encoded.status_code, _headers(encoded.raw_headers))


def _streamed(value: StreamingResponse) -> Response:
    # Streamed on as the function produces it; a background task runs after the last item.
    return Response(_stream(value), value.status_code, _headers(value.raw_headers))


async def _to_response(value: Any, scope: dict[str, Any]) -> Response:
    if isinstance(value, StreamingResponse):
        return _streamed(value)
    if not isinstance(value, StarletteResponse):
        from fastapi.encoders import jsonable_encoder
        from fastapi.responses import JSONResponse

        value = JSONResponse(jsonable_encoder(value))
    # Any other Response (a FileResponse too) is run as the ASGI app it is, background task
    # included, and its messages collected.
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await value(scope, _receive(b""), send)
    return Response(b"".join(chunks), start.get("status", 200), _headers(start.get("headers", [])))


async def _stream(response: StreamingResponse) -> Any:
    async for chunk in response.body_iterator:
        yield chunk
    if response.background is not None:
        await response.background()


def _headers(raw: Any) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
