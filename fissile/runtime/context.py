"""The optional second argument of a native function."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from fissile.observability import tracecontext

SOCKET_ENV = "FISSILE_PLATFORM_SOCKET"
# An HTTP method is a token (RFC 9110); upper case is what routes match.
_METHOD = re.compile(r"^[A-Z][A-Z0-9_-]{0,31}$")
# Characters a path keeps as they are: a caller's percent-escapes stay escapes.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
Query = Mapping[str, str | int | float | Sequence[str | int | float]] | str


class PlatformError(Exception):
    """The platform socket could not be reached, or refused a publish."""


class Reply:
    """What ``context.invoke`` returns: the called function's answer (or the platform's, such
    as 404 for an unknown function, 504 past the deadline, 508 for a call loop)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Reply {self.status} {len(self.body)} bytes>"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("fissile", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Context:
    """Facts about the current invocation, the function's logger, and the way to call other
    functions and publish to topics."""

    __slots__ = (
        "_deadline",
        "_trace",
        "_traceparent",
        "chain_depth",
        "chain_id",
        "function",
        "invocation_id",
        "logger",
    )

    def __init__(
        self,
        function: str,
        invocation_id: str,
        timeout: float,
        logger: logging.Logger,
        chain_id: str = "",
        chain_depth: int = 0,
        traceparent: str = "",
    ) -> None:
        self.function = function
        self.invocation_id = invocation_id
        self._deadline = time.monotonic() + timeout
        self.logger = logger
        self.chain_id = chain_id or invocation_id
        self.chain_depth = chain_depth
        # Parsed on first use: most functions never ask.
        self._traceparent = traceparent
        self._trace: tracecontext.TraceParent | None = None

    @property
    def deadline(self) -> float:
        """``time.monotonic()`` value past which the platform ends the request."""
        return self._deadline

    @property
    def trace_id(self) -> str:
        """The W3C trace id (32 hex digits) of the request: from its ``traceparent`` header, else
        a new one for this invocation."""
        return self._current().trace_id

    @property
    def span_id(self) -> str:
        """The id (16 hex digits) of the platform's span that delivered this request (its
        ``traceparent``'s parent id), else a new one."""
        return self._current().parent_id

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` header to send to carry this trace on to another service."""
        trace = self._current()
        return tracecontext.format(trace.trace_id, trace.parent_id, trace.flags)

    def _current(self) -> tracecontext.TraceParent:
        trace = self._trace
        if trace is None:
            trace = tracecontext.parse(self._traceparent) if self._traceparent else None
            if trace is None:
                trace = tracecontext.TraceParent(
                    tracecontext.new_trace_id(), tracecontext.new_span_id(), tracecontext.SAMPLED
                )
            self._trace = trace
        return trace

    def remaining(self) -> float:
        """Seconds left before the function's timeout."""
        return max(0.0, self._deadline - time.monotonic())

    def invoke(
        self,
        function: str,
        data: Any = None,
        *,
        method: str = "POST",
        path: str = "/",
        query: Query | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content_type: str | None = None,
    ) -> Reply:
        """Call ``function`` synchronously through the platform and return its answer, whatever
        its status (raises ``PlatformError`` only when the platform cannot be reached).

        The callee sees ``method``, ``path`` (as a route would give it: ``/items/1``, not
        ``/function/<name>/items/1``), ``query`` (a dict, values may be lists, or a string) and
        ``headers``. The body is ``data`` (bytes, str, or anything JSON-serializable) or
        ``json``. The callee gets at most this invocation's remaining time; a chain of calls
        deeper than the platform's limit is answered 508."""
        verb = method.upper()
        if not _METHOD.match(verb):
            raise ValueError(f"invalid HTTP method {method!r}")
        body, sent = encode_call(data, json, content_type, headers)
        sent |= {
            "x-fissile-chain-id": self.chain_id,
            "x-fissile-chain-depth": str(self.chain_depth),
            "x-fissile-deadline": f"{self.remaining():.3f}",
            "traceparent": self.traceparent,
        }
        target = invoke_target(function, path, query)
        return self._request(verb, target, sent, body)

    def publish(
        self,
        topic: str,
        data: Any,
        *,
        mqtype: str = "embedded",
        broker_url: str | None = None,
        content_type: str | None = None,
    ) -> None:
        """Publish ``data`` (bytes, str, or JSON-serializable) to ``topic``; returns once the
        broker has it. Raises PlatformError when it was refused."""
        body, kind = _encode(data, content_type)
        query = {"topic": topic, "mqtype": mqtype}
        if broker_url:
            query["broker_url"] = broker_url
        headers = {"content-type": kind, "traceparent": self.traceparent}
        reply = self._request("POST", f"/publish?{urlencode(query)}", headers, body)
        if not reply.ok:
            raise PlatformError(f"publish to {topic!r} failed ({reply.status}): {reply.text}")

    def _request(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        path = os.environ.get(SOCKET_ENV)
        if not path:
            raise PlatformError(f"no platform socket: {SOCKET_ENV} is not set")
        connection = _UnixConnection(path, timeout=max(self.remaining(), 0.001) + 5.0)
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, payload)
        except (OSError, http.client.HTTPException) as exc:
            raise PlatformError(f"cannot reach the platform at {path}: {exc}") from exc
        finally:
            connection.close()

    def __repr__(self) -> str:
        return f"<Context {self.function} {self.invocation_id}>"


def invoke_target(function: str, path: str = "/", query: Query | None = None) -> str:
    """The platform socket's target for a call of ``function`` at ``path`` with ``query``:
    ``/invoke/<function><path>[?query]``, the function's name escaped whole (it never holds a
    slash), the path as the callee's request target."""
    path, _, inline = (path or "/").partition("?")
    if not path.startswith("/"):
        path = "/" + path
    # ``/invoke/<function>`` alone is a call at ``/``.
    rest = "" if path == "/" else quote(path, safe=_PATH_SAFE)
    target = f"/invoke/{quote(function, safe='')}{rest}"
    extra = query if isinstance(query, str) else urlencode(query or {}, doseq=True)
    joined = "&".join(part for part in (inline, extra.lstrip("?")) if part)
    return f"{target}?{joined}" if joined else target


def encode_call(
    data: Any, value: Any, content_type: str | None, headers: Mapping[str, str] | None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers (lower-case names) of a call with ``data`` or JSON ``value``: a
    content type only with something to type, and the caller's own winning over the one
    guessed from the data (``content_type`` wins over both)."""
    if value is not None:
        if data is not None:
            raise TypeError("give data or json, not both")
        body, kind = json.dumps(value).encode(), content_type or "application/json"
    else:
        body, kind = _encode(data, content_type)
    sent = {name.lower(): text for name, text in (headers or {}).items()}
    typed = bool(body) or content_type is not None or data is not None or value is not None
    if typed and (content_type is not None or "content-type" not in sent):
        sent["content-type"] = kind
    return body, sent


def _encode(data: Any, content_type: str | None) -> tuple[bytes, str]:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data), content_type or "application/octet-stream"
    if isinstance(data, str):
        return data.encode(), content_type or "text/plain; charset=utf-8"
    if data is None:
        return b"", content_type or "application/octet-stream"
    return json.dumps(data).encode(), content_type or "application/json"
