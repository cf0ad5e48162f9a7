"""A whole WSGI app (Flask, Django's ``wsgi.application``, Bottle, ...) as a function (PEP 3333).

The app runs as any sync function does: on the instance's loop, or in the function's threads
when its concurrency is above 1. A response of one chunk (the usual: a list of one body) is
answered whole; a longer iterable is streamed, each chunk asked for as the router takes it.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fissile.runtime.context import Context
from fissile.runtime.contracts._handler import Handler, Target
from fissile.runtime.contracts._mount import split_path
from fissile.runtime.request import Request
from fissile.runtime.response import Response

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], None]]
App = Callable[[Environ, StartResponse], Iterable[bytes]]

_EMPTY = object()


def bind(target: Target) -> Handler:
    app: App = target.func
    function = target.function

    def invoke(request: Request, context: Context) -> Response:
        return call(app, environ(request, function))

    return Handler(app, "wsgi", invoke, is_async=False)


def environ(request: Request, function: str) -> Environ:
    root, path = split_path(request, function)
    headers = request.headers
    host = headers.get("host", "")
    name, _, port = host.rpartition(":") if ":" in host else (host, "", "")
    scheme = headers.get("x-forwarded-proto", "http")
    env: Environ = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": root,
        "PATH_INFO": path[len(root) :],
        "QUERY_STRING": request.query_string,
        "SERVER_NAME": name or "localhost",
        "SERVER_PORT": port or ("443" if scheme == "https" else "80"),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": headers.get("x-forwarded-for", "127.0.0.1").split(",")[0].strip(),
        "CONTENT_LENGTH": str(len(request.body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": io.BytesIO(request.body),
        # The function's log, where an app's own error reporting belongs.
        "wsgi.errors": sys.stderr,
        # With concurrency above 1 the app runs in several threads; saying so always is safe.
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for key, value in headers.items():
        if key == "content-type":
            env["CONTENT_TYPE"] = value
        elif key != "content-length":
            env["HTTP_" + key.upper().replace("-", "_")] = value
    return env


class _Start:
    """``start_response``: the status and headers, replaceable until the body begins."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.sent = False
        self.written: list[bytes] = []

    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and self.sent:
            raise exc_info[1].with_traceback(exc_info[2])
        if self.status and exc_info is None:
            raise RuntimeError("start_response called twice without exc_info")
        self.status = int(status.split(" ", 1)[0])
        self.headers = [(str(k), str(v)) for k, v in headers]
        return self.write

    def write(self, data: bytes) -> None:
        # PEP 3333's legacy write(): what it is given goes before the returned body.
        self.sent = True
        self.written.append(bytes(data))


def call(app: App, env: Environ) -> Response:
    start = _Start()
    result = app(env, start)
    try:
        if isinstance(result, list | tuple):
            # Already whole in memory: answered whole.
            first: bytes | object = b"".join(result)
            second: bytes | object = _EMPTY
        else:
            items = iter(result)
            first = _next_chunk(items)
            second = _next_chunk(items) if first is not _EMPTY else _EMPTY
        if not start.status:
            raise RuntimeError("the WSGI app did not call start_response")
    except BaseException:
        _close(result)
        raise
    start.sent = True
    chunks = [*start.written, *(c for c in (first, second) if isinstance(c, bytes))]
    if second is _EMPTY:
        _close(result)
        response = Response(b"".join(chunks), start.status)
    else:
        response = Response(_rest(result, items, chunks), start.status)
    response.headers = start.headers  # exactly as the app gave them
    return response


def _next_chunk(items: Iterator[bytes]) -> bytes | object:
    """The next non-empty chunk (an app may yield empty ones before it calls
    start_response), or ``_EMPTY`` at the end."""
    for chunk in items:
        if chunk:
            if not isinstance(chunk, bytes):
                raise TypeError(f"a WSGI app yields bytes, not {type(chunk).__name__}")
            return chunk
    return _EMPTY


def _rest(result: Iterable[bytes], items: Iterator[bytes], first: list[bytes]) -> Iterator[bytes]:
    try:
        yield from first
        yield from items
    finally:
        _close(result)


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()
