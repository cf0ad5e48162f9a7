"""The platform socket: what functions reach the platform through, for ``context.invoke`` and
``context.publish``. A raw ASGI app served on a unix socket in the executor's run dir, which the
sandbox binds into every instance's root at ``/run/fissile`` (so it works with ``--network
none`` and a private root).

- ``<METHOD> /invoke/<function>[/path][?query]``: a synchronous call through the same path as
  the router; the callee gets the method, ``/path`` (``/`` when absent) with the query as its
  request target, as a route would hand it over, and the caller's headers but the platform's
  own (``x-fissile-*``, hop-by-hop ones). The caller sends its chain id, its depth and its
  remaining time (``x-fissile-chain-id``, ``x-fissile-chain-depth``, ``x-fissile-deadline``);
  the callee gets depth + 1 and at most the caller's remaining time. A call deeper than
  ``MAX_DEPTH`` is refused with 508 Loop Detected, so a function calling itself stops.
- ``POST /publish?topic=T&mqtype=M[&broker_url=U]``: the body, published to a topic.

Anyone who can connect may call any function and publish to any topic, including a function
whose routes ask for credentials (the router's function doors do not apply here). Who is
calling is the platform's to say: the callee's ``x-fissile-caller`` names the function the
kernel says the connecting process belongs to (its uid or pid, SO_PEERCRED, read as the
connection is accepted), whatever the caller sent; a process that is no function's gets no
caller header.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fissile.executor import Executor
from fissile.executor.connection import InstanceResponse
from fissile.observability import tracing
from fissile.router.invoke import invoke, new_invocation_id
from fissile.router.proxy import Answer
from fissile.triggers.mq.hub import Refused

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Publisher = Callable[[str, str, bytes, dict[str, str], str | None], Awaitable[None]]

MAX_DEPTH = 16
MAX_BODY = 16 * 1024 * 1024
CHAIN_ID = "x-fissile-chain-id"
CHAIN_DEPTH = "x-fissile-chain-depth"
DEADLINE = "x-fissile-deadline"
CALLER = "x-fissile-caller"
TRACEPARENT = "traceparent"
# Where the protocol puts the connecting process's credentials in the ASGI scope.
PEER = "fissile.peer"
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
# Caller headers not passed on to the callee: the socket's framing and host, and what the
# platform says itself (chain, caller, trace: a hop of its own).
_NOT_PASSED = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", TRACEPARENT}
)
_PLATFORMS = ("x-fissile-", "x-fission-params-")


class PlatformSocketProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, adding the peer's credentials (pid, uid, gid) to each request's
    scope. Read once per connection: a unix socket's peer cannot change."""

    peer: tuple[int, int, int] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            self.peer = _UCRED.unpack(raw)
        except (AttributeError, OSError):
            self.peer = None
        super().connection_made(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[PEER] = self.peer  # type: ignore[literal-required]


class PlatformSocketApp:
    def __init__(self, executor: Executor, publisher: Publisher) -> None:
        self.executor = executor
        self.publisher = publisher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        calling = path.startswith("/invoke/")
        if method != "POST" and not calling:
            await _reply(send, Answer(405, "method_not_allowed", "use POST"))
            return
        body = await _body(receive)
        if body is None:
            await _reply(send, Answer(413, "body_too_large", f"body exceeds {MAX_BODY} bytes"))
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if calling:
            function, target = _split_target(scope)
            caller = self.caller(scope.get(PEER))
            result = await self.invoke(function, headers, body, caller, method, target)
            await _reply(send, result)
        elif path == "/publish":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            await _reply(send, await self.publish(query, headers, body))
        else:
            await _reply(send, Answer(404, "not_found", f"no endpoint {path}"))

    def caller(self, peer: tuple[int, int, int] | None) -> str | None:
        if peer is None:
            return None
        pid, uid, _ = peer
        return self.executor.caller(pid, uid)

    async def invoke(
        self,
        function: str,
        headers: Mapping[str, str],
        body: bytes,
        caller: str | None = None,
        method: str = "POST",
        target: str = "/",
    ) -> InstanceResponse | Answer:
        try:
            depth = max(0, int(headers.get(CHAIN_DEPTH, "0"))) + 1
            deadline = float(headers[DEADLINE]) if DEADLINE in headers else None
        except ValueError:
            return Answer(400, "bad_request", f"{CHAIN_DEPTH} and {DEADLINE} must be numbers")
        chain = headers.get(CHAIN_ID) or new_invocation_id()
        if depth > MAX_DEPTH:
            return Answer(
                508,
                "loop_detected",
                f"call chain {chain} is {depth} calls deep (limit {MAX_DEPTH}); is a function"
                " calling itself?",
            )
        if deadline is not None and deadline <= 0:
            return Answer(504, "timeout", "the caller's deadline has passed")
        # The call is a span of the caller's trace; the callee's parent is that span.
        hop = tracing.hop(headers.get(TRACEPARENT))
        forwarded = {
            k: v
            for k, v in headers.items()
            if k not in _NOT_PASSED and not k.startswith(_PLATFORMS)
        }
        forwarded |= {CHAIN_ID: chain, CHAIN_DEPTH: str(depth)}
        if caller:  # the platform's word; what the caller sent is not passed on
            forwarded[CALLER] = caller
        return await invoke(
            self.executor,
            function,
            method=method,
            path=target,
            headers=forwarded,
            body=body,
            timeout=deadline,
            hop=hop,
            span="invoke",
        )

    async def publish(
        self, query: Mapping[str, list[str]], headers: Mapping[str, str], body: bytes
    ) -> Answer:
        topic = (query.get("topic") or [""])[0]
        mqtype = (query.get("mqtype") or ["embedded"])[0]
        url = (query.get("broker_url") or [""])[0] or None
        if not _TOPIC.match(topic):
            return Answer(422, "invalid", f"invalid topic {topic!r}")
        # The message carries the publish's span as its consumers' parent.
        hop = tracing.hop(headers.get(TRACEPARENT))
        meta = {k: v for k, v in headers.items() if k == "content-type"}
        meta[TRACEPARENT] = hop.traceparent
        start = time.time_ns() if tracing.enabled() else 0
        try:
            await self.publisher(mqtype, topic, body, meta, url)
        except Refused as exc:
            if start:
                hop.record(f"publish {topic}", start, _topic(topic, mqtype), error=exc.message)
            return Answer(exc.status, exc.code, exc.message)
        if start:
            hop.record(f"publish {topic}", start, _topic(topic, mqtype), kind="producer")
        return _Accepted(topic, len(body))


class _Accepted(Answer):
    def __init__(self, topic: str, size: int) -> None:
        self.status = 202
        self.body = json.dumps({"topic": topic, "size": size}).encode()
        self.headers = [(b"content-type", b"application/json")]


def _split_target(scope: Scope) -> tuple[str, str]:
    """``(function, target)`` of ``/invoke/<function>[/path][?query]``: the name unescaped,
    the path and query as sent (still escaped, as the router forwards a client's)."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    rest = raw.decode("latin-1")[len("/invoke/") :]
    name, slash, path = rest.partition("/")
    target = slash + path or "/"
    query: bytes = scope.get("query_string", b"")
    if query:
        target += "?" + query.decode("latin-1")
    return unquote(name), target


def _topic(topic: str, mqtype: str) -> dict[str, str]:
    return {"messaging.destination.name": topic, "messaging.system": mqtype}


async def _body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _reply(send: Send, result: InstanceResponse | Answer) -> None:
    drop = (b"content-length", b"transfer-encoding", b"connection", b"keep-alive")
    headers = [(k, v) for k, v in result.headers if k.lower() not in drop]
    headers.append((b"content-length", str(len(result.body)).encode()))
    await send({"type": "http.response.start", "status": result.status, "headers": headers})
    await send({"type": "http.response.body", "body": result.body})
