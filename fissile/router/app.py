"""The router: the public data plane, a raw ASGI callable (a framework layer here costs 20-45 %
of throughput, DESIGN.md). Plain synchronous calls skip ASGI: the router's protocol
(``protocol.py``) asks ``Router.direct`` for their pool and forwards them itself; this app serves
everything else. It reads only the in-memory route table and the executor's pools."""

from __future__ import annotations

import asyncio
import functools
import hmac
import itertools
import json
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fissile.executor import Executor
from fissile.executor.connection import (
    BodyReader,
    BodyStream,
    InstanceGone,
    InstanceResponse,
    ResponseTooLarge,
)
from fissile.executor.pools import FunctionPool
from fissile.models import HTTP_METHODS, HTTPTriggerSpec
from fissile.observability import tracecontext
from fissile.observability.access import AccessLog, Record
from fissile.router.auth import KeyRing, Principal, Refusal, carrier, key_value
from fissile.router.cors import REQUEST_HEADERS, REQUEST_METHOD
from fissile.router.forwarded import TrustedProxies
from fissile.router.front_door import INVOCATIONS_PREFIX, FrontDoor
from fissile.router.guard import Guard, guard_of
from fissile.router.limits import Connections, Limits
from fissile.router.proxy import Answer, Trip, forward
from fissile.router.ratelimit import retry_after
from fissile.router.relay import ResponseTimedOut
from fissile.router.routes import MethodNotAllowed, Route, RouteTable, request_host
from fissile.router.split import Split
from fissile.router.webhook import check_signature
from fissile.store import Change, Store

if TYPE_CHECKING:
    from fissile.cluster.peers import Peers

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# A direct call's route: function, path params, prefix (on a prefix route), trigger.
Resolved = tuple[str, dict[str, str], str | None, str | None]

DIRECT_PREFIX = "/function/"
ASYNC_PREFIX = "/async-function/"
# The cluster's node-to-node endpoints (fissile/cluster/peers.py).
CLUSTER_PREFIX = "/_fissile/cluster/"
#: ``fissile up --function-door``: who may call functions by name, through /function/ and
#: /async-function/ (docs/security.md). auto: anyone, but for a function one of whose routes
#: asks for credentials or a signature, the platform token or an API key for it.
DOOR_MODES = ("auto", "open", "token", "off")
# Where a door call carries the platform token: an X-Fissile-* header, never forwarded.
DOOR_TOKEN = b"x-fissile-token"
DEFAULT_MAX_BODY = 16 * 1024 * 1024
# Route resolutions the router's hot path remembers (``Router._resolve``), at most.
MAX_RESOLVED = 1024
# Ids of synchronous calls only correlate logs (they are no capability, unlike asynchronous
# ones): a random prefix per process and a counter, without a getrandom() call per request.
_INVOCATION_PREFIX = secrets.token_hex(4).encode()
INVOCATION_PREFIX = _INVOCATION_PREFIX.decode()
_invocations = itertools.count()
_getrandbits = random.getrandbits
_SPAN_BITS = (1 << 64) - 1
# Set by the router's protocol on a request it refused for its body's size but must let the
# ASGI path answer (responses go out in order). A client setting it only refuses itself.
REFUSED_BODY = b"x-fissile-refused-body"

# Never forwarded from the client: hop-by-hop headers, and our own metadata (so a client cannot
# forge path params or the function name).
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"expect",
        # The router says these itself (from the peer, or what a trusted proxy forwarded,
        # fissile/router/forwarded.py): a client's own copy came first and contracts read the
        # first, so it would have chosen the function's REMOTE_ADDR and scheme.
        b"x-forwarded-for",
        b"x-forwarded-proto",
    }
)
# The platform's metadata, Fission's path parameter headers included (Fission's router
# overwrites a client's copy; here it never reaches the function).
_PLATFORM_HEADERS = (b"x-fissile-", b"x-fission-params-")
# Instance response headers never passed on: the framing is the router's (here and in
# protocol.py).
DROP_FROM_RESPONSE = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length"}
)


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class Router:
    def __init__(
        self,
        executor: Executor,
        max_body: int = DEFAULT_MAX_BODY,
        front_door: FrontDoor | None = None,
        limits: Limits | None = None,
        access_log: AccessLog | None = None,
        door: str = "auto",
        token: str | None = None,
        trusted: TrustedProxies | None = None,
    ) -> None:
        if door not in DOOR_MODES:
            raise ValueError(f"function door must be one of {', '.join(DOOR_MODES)}")
        self.executor = executor
        self.door = door
        self.token = token  # the platform's token, which opens a locked door
        # Peers whose X-Forwarded-* headers are honoured (fissile/router/forwarded.py).
        self.trusted = trusted
        # One record per client request (observability/access.py); None: ``--access-log off``.
        self.access_log = access_log if access_log is not None and access_log.enabled else None
        # The direct path's requests are counted from their records, in bulk (Trip.logged).
        self.log_counts = (
            self.access_log is not None
            and executor.metrics.enabled
            and self.access_log.count_into(executor.metrics)
        )
        self.max_body = max_body
        self.front_door = front_door
        # Client connections and what each may send (the router's protocol enforces them).
        self.connections = Connections(limits or Limits())
        self.table = RouteTable()
        self._routes: dict[str, Route] = {}
        self.keys = KeyRing()
        # What routes ask of requests (CORS, credentials, rates, signatures), by trigger name;
        # a route without a guard is served on the protocol's fast path.
        self._guards: dict[str, Guard] = {}
        # The functions whose doors need credentials (a route of theirs protects them), and
        # whether every door call takes the ASGI path (token, off).
        self._door_locked: frozenset[str] = frozenset()
        self._door_all = door in ("token", "off")
        # The direct calls' route resolutions (``_resolve``), for ``_matches_table`` only.
        self._matches: dict[tuple[str, ...], Resolved | None] = {}
        # Split routes' resolutions, apart: each request draws its function from the split.
        self._splits: dict[tuple[str, ...], tuple[Split, dict[str, str], str | None, str]] = {}
        self._matches_table = self.table
        # Cluster mode: the peers a request may be forwarded to (fissile/cluster/peers.py).
        self.cluster: Peers | None = None

    def follow(self, store: Store) -> None:
        """Load the HTTP triggers and keep the table current as they change."""
        self._store = store
        self.keys.load(record.data for record in store.list("apikeys"))
        for record in store.list("httptriggers"):
            self._add(HTTPTriggerSpec.model_validate(record.data))
        self._rebuild()
        store.subscribe(self._changed)

    def _changed(self, change: Change) -> None:
        if change.record.kind == "apikeys":
            self.keys.load(record.data for record in self._store.list("apikeys"))
            return
        if change.record.kind == "functions":
            if change.action == "deleted" and self.access_log is not None:
                # A function made again under its name starts with no requests of its own.
                self.access_log.forget(change.record.name)
            return
        if change.record.kind != "httptriggers":
            return
        if change.action == "deleted":
            self._routes.pop(change.record.name, None)
            self._guards.pop(change.record.name, None)
        else:
            self._add(HTTPTriggerSpec.model_validate(change.record.data))
        self._rebuild()

    def _add(self, spec: HTTPTriggerSpec) -> None:
        self._routes[spec.name] = Route.from_trigger(spec)
        guard = guard_of(spec, self.keys, self.keys.buckets)
        if guard is None:
            self._guards.pop(spec.name, None)
        else:
            self._guards[spec.name] = guard

    def _rebuild(self) -> None:
        """A new table, and the functions whose doors it locks (set before the table, which
        ``_resolve`` watches for)."""
        protected = {
            function
            for name, guard in self._guards.items()
            if guard.protects
            for function in self._routes[name].functions
        }
        self._door_locked = frozenset(protected) if self.door == "auto" else frozenset()
        self.table = RouteTable(self._routes.values())

    def direct(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]]
    ) -> tuple[FunctionPool, dict[str, str], str | None, str | None] | None:
        """The pool, path params, route prefix (on a prefix route) and trigger (on a route) of
        a plain synchronous call to a function, which the router's protocol forwards itself;
        None for everything else (the router's own answers, the front door, guarded routes,
        locked function doors, OPTIONS), which takes the ASGI path through ``http``."""
        params: dict[str, str] = {}
        prefix: str | None = None
        trigger: str | None = None
        if path.startswith(DIRECT_PREFIX):
            function = path[len(DIRECT_PREFIX) :].split("/", 1)[0]
            if method == "OPTIONS" or self._door_all or function in self._door_locked:
                return None
        elif path.startswith((ASYNC_PREFIX, INVOCATIONS_PREFIX, "/_fissile/")):
            return None
        else:
            host = None
            if self.table.hosted:
                for name, value in headers:
                    if name == b"host":
                        host = request_host(value)
                        break
            resolved = self._resolve(method, path, host)
            if resolved is None:
                return None
            function, params, prefix, trigger = resolved
        pool = self.executor.functions.get(function)
        if pool is None:
            return None
        if self.cluster is not None and self.cluster.forwarding(headers, pool):
            return None  # to a peer, through ``http``
        if self.front_door is not None:
            for name, value in headers:
                if name == b"prefer" and b"respond-async" in value.lower():
                    return None
        return pool, params, prefix, trigger

    def _function_pool(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]]
    ) -> FunctionPool | None:
        """The pool of the function a request calls, if it calls one (cluster mode only)."""
        if path.startswith((DIRECT_PREFIX, ASYNC_PREFIX)):
            prefix = DIRECT_PREFIX if path.startswith(DIRECT_PREFIX) else ASYNC_PREFIX
            function = path[len(prefix) :].split("/", 1)[0]
        else:
            host = None
            if self.table.hosted:
                host = next((request_host(v) for n, v in headers if n == b"host"), None)
            resolved = self._resolve(method, path, host)
            if resolved is None:
                return None
            function = resolved[0]
        return self.executor.functions.get(function)

    def guarded(
        self, path: str, headers: list[tuple[bytes, bytes]]
    ) -> tuple[FunctionPool, dict[str, str], str | None, Guard] | None:
        """A websocket's route when it has a guard (``direct`` leaves those): its function's
        pool, the path params, the prefix (on a prefix route) and the guard."""
        if path.startswith((DIRECT_PREFIX, ASYNC_PREFIX, INVOCATIONS_PREFIX, "/_fissile/")):
            return None
        host = None
        if self.table.hosted:
            host = next((request_host(v) for n, v in headers if n == b"host"), None)
        try:
            match = self.table.match("GET", path, host)
        except MethodNotAllowed:
            return None
        if match is None:
            return None
        guard = self._guards.get(match.route.trigger)
        split = match.route.split
        function = match.route.function if split is None else split.pick()
        pool = self.executor.functions.get(function)
        if guard is None or pool is None:
            return None
        prefix = match.route.path if match.route.prefix else None
        return pool, match.params, prefix, guard

    def _resolve(self, method: str, path: str, host: str | None = None) -> Resolved | None:
        """The function, path params, prefix (on a prefix route) and trigger of the route for a
        direct call, or None (no route,
        a wrong method, a guarded route), remembered for the table in use: a route match costs
        ~0.8 µs (timeit, one exact route; memory.json's lookup with 1,000 routes: ~2.5 µs), a
        hit ~0.11 µs; the router's Python per request, 114k to 108k instructions
        (callgrind, in process, 32 clients on 10 instances)."""
        matches = self._matches
        if self._matches_table is not self.table:
            # A table is replaced on any change of the triggers (and their guards), never
            # changed in place.
            matches = self._matches = {}
            self._splits = {}
            self._matches_table = self.table
        key = (method, path) if host is None else (method, path, host)
        try:
            return matches[key]
        except KeyError:
            pass
        remembered = self._splits.get(key)
        if remembered is not None:
            split, params, prefix, trigger = remembered
            return (split.pick(), params, prefix, trigger)
        resolved: Resolved | None = None
        try:
            # OPTIONS is the router's to answer (CORS, Allow), or at least to look at.
            match = None if method == "OPTIONS" else self.table.match(method, path, host)
        except MethodNotAllowed:
            match = None
        if match is not None and match.route.trigger not in self._guards:
            route = match.route
            prefix = route.path if route.prefix else None
            if route.split is not None:
                # Never in ``matches``: a hit there must not draw, so other routes pay nothing.
                if len(self._splits) >= MAX_RESOLVED:
                    self._splits.clear()
                self._splits[key] = (route.split, match.params, prefix, route.trigger)
                return (route.split.pick(), match.params, prefix, route.trigger)
            resolved = (route.function, match.params, prefix, route.trigger)
        if len(matches) >= MAX_RESOLVED:
            matches.clear()  # distinct paths without end (path params): start over
        matches[key] = resolved
        return resolved

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "websocket":
            if self.front_door is not None and scope["path"].startswith(INVOCATIONS_PREFIX):
                await self.front_door.websocket(scope, receive, send)
            else:
                await receive()
                await send({"type": "websocket.close", "code": 1003})

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.trusted is not None:
            self.trusted.apply(scope)
        log = self.access_log
        if log is None or scope["path"] == "/_fissile/healthz":
            await self._http(scope, receive, send, None)
            return
        seen = _Seen(send, time.monotonic())
        try:
            await self._http(scope, receive, seen.send, seen)
        finally:
            if seen.head:
                # Its function's requests are counted as it forwards them (proxy._count).
                log.add_uncounted(seen.record(scope))

    async def _http(self, scope: Scope, receive: Receive, send: Send, seen: _Seen | None) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        if self.cluster is not None:
            if path.startswith(CLUSTER_PREFIX):
                await self.cluster.internal(scope, receive, send)
                return
            # Invocations live on the node that accepted them: never forwarded. A request sent
            # to a peer that placement chose and that failed before answering, or refused it
            # for want of capacity, is served here.
            if not path.startswith(("/_fissile/", INVOCATIONS_PREFIX)):
                pool = self._function_pool(method, path, scope["headers"])
                if self.cluster.forwarding(scope["headers"], pool):
                    back = await self.cluster.forward(scope, receive, send)
                    if back is None:
                        return
                    receive = back  # served here after all (its body read again)
        params: dict[str, str] = {}
        prefix: str | None = None
        asynchronous = False
        door = False
        guard: Guard | None = None
        if path.startswith(DIRECT_PREFIX):
            function = path[len(DIRECT_PREFIX) :].split("/", 1)[0]
            door = True
        elif path.startswith(ASYNC_PREFIX) and self.front_door is not None:
            function = path[len(ASYNC_PREFIX) :].split("/", 1)[0]
            asynchronous = True
            door = True
        elif path.startswith(INVOCATIONS_PREFIX) and self.front_door is not None:
            await self.front_door.http(scope, receive, send)
            return
        elif path == "/_fissile/healthz":
            await _answer(send, Answer(200, "ok", "router is serving"))
            return
        else:
            headers = scope["headers"]
            host = None
            if self.table.hosted:
                host = next((request_host(v) for n, v in headers if n == b"host"), None)
            lookup = method
            if method == "OPTIONS":
                # A preflight asks about the method the browser will use: its route decides.
                lookup = _header(headers, REQUEST_METHOD, b"OPTIONS").decode("latin-1").upper()
            try:
                match = self.table.match(lookup, path, host)
            except MethodNotAllowed as exc:
                if method == "OPTIONS":
                    await _answer(send, _allow([*exc.allowed, "OPTIONS"]))
                    return
                allow = ", ".join(exc.allowed).encode()
                message = f"{method} is not allowed on {path}"
                await _answer(send, Answer(405, "method_not_allowed", message, [(b"allow", allow)]))
                return
            if match is None:
                await _answer(send, Answer(404, "no_route", f"no route for {method} {path}"))
                return
            route = match.route
            guard = self._guards.get(route.trigger)
            if method == "OPTIONS":
                cors = None if guard is None else guard.cors
                origin = _header(headers, b"origin", b"")
                if cors is not None and origin and lookup != "OPTIONS":
                    requested = _header(headers, REQUEST_HEADERS, b"")
                    allowed = cors.preflight(origin, lookup.encode(), requested)
                    await _answer(send, _allow(sorted(route.methods) or HTTP_METHODS, allowed))
                    return
                if cors is not None or not route.allows("OPTIONS"):
                    # Not the function's to answer: it never sees an OPTIONS it did not ask for.
                    await _answer(
                        send, _allow([*(sorted(route.methods) or HTTP_METHODS), "OPTIONS"])
                    )
                    return
            function = route.function if route.split is None else route.split.pick()
            params = match.params
            if route.prefix:
                prefix = route.path
            if seen is not None:
                seen.route = route.trigger
        if seen is not None:
            seen.function = function

        principal: Principal | None = None
        if door:
            if method == "OPTIONS":
                # Never an invocation: a browser's preflight must not start work.
                await _answer(send, _allow(HTTP_METHODS))
                return
            checked = self._door(function, scope["headers"])
            if isinstance(checked, Refusal):
                await _answer(send, _refused(checked))
                return
            wait = 0.0 if checked is None else _key_wait(checked)
            if wait and checked is not None and checked.key is not None:
                await _answer(send, _too_many(f"API key {checked.key.name!r}", wait))
                return
            principal = checked
        elif guard is not None:
            if guard.cors is not None:
                origin_value = _header(scope["headers"], b"origin", b"") or None
                send = _adding(send, guard.cors.response(origin_value))
            admitted = await admit(guard, scope["headers"])
            if isinstance(admitted, Answer):
                await _answer(send, admitted)
                return
            principal = admitted

        try:
            pool = self.executor.function(function)
        except Exception:
            await _answer(
                send, Answer(404, "function_not_found", f"function {function!r} not found")
            )
            return
        try:
            body = await self._body(scope, receive)
        except BodyTooLarge:
            limit = f"{self.max_body} bytes"
            await _answer(send, Answer(413, "body_too_large", f"request body exceeds {limit}"))
            return
        except ClientGone:
            return
        if guard is not None and guard.webhook_secret is not None:
            refusal = check_signature(guard.webhook_secret, scope["headers"], body)
            if refusal is not None:
                await _answer(send, Answer(401, "bad_signature", refusal))
                return
        extra = None
        if principal is not None:
            extra = principal.headers()
            if principal.consumed is not None:
                # Credentials are the router's: the function gets who, not how to be them.
                scope["headers"] = [h for h in scope["headers"] if h[0] != principal.consumed]

        if self.front_door is not None and method != "OPTIONS":
            if not asynchronous:
                # Several Prefer lines combine like one comma-separated list (RFC 7240).
                for name, value in scope["headers"]:
                    if name == b"prefer" and b"respond-async" in value.lower():
                        asynchronous = True
                        break
            if asynchronous:
                meta, callback = _async_headers(scope, function, params)
                if extra is not None:
                    meta += [(k.decode(), v.decode("latin-1")) for k, v in extra]
                await self.front_door.accept(scope, send, function, meta, body, callback)
                return

        target: bytes = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        client = scope.get("client")
        trip = None if seen is None else seen.trip
        request = encode_forward(
            method,
            target,
            scope["headers"],
            scope.get("scheme", "http"),
            client[0] if client else None,
            function,
            params,
            body,
            pool.spec.timeout,
            prefix,
            trip,
            extra,
        )
        result = await forward(self.executor, pool, request, trip=trip)
        if isinstance(result, InstanceResponse):
            headers = [(k, v) for k, v in result.headers if k.lower() not in DROP_FROM_RESPONSE]
            length = len(result.body) if result.stream is None else result.length
            if length is not None:
                headers.append((b"content-length", str(length).encode()))
            await send({"type": "http.response.start", "status": result.status, "headers": headers})
            if result.stream is None:
                await send({"type": "http.response.body", "body": result.body})
            elif method == "HEAD":
                result.stream.cancel()  # uvicorn sends no body: the function need not make it
                await send({"type": "http.response.body", "body": b""})
            else:
                await _stream_body(send, receive, result.stream)
        else:
            await _answer(send, result)

    def _door(
        self, function: str, headers: list[tuple[bytes, bytes]]
    ) -> Principal | Refusal | None:
        """Whether a call by name (/function/, /async-function/) may go on: None when the
        door is open to it, the caller when it proved who it is, or why not."""
        if self.door == "open" or (self.door == "auto" and function not in self._door_locked):
            return None
        token = _header(headers, DOOR_TOKEN, b"").decode("latin-1").strip()
        if token and self.token and hmac.compare_digest(token.encode(), self.token.encode()):
            # The operator's tools (fn test, the dashboard) call by name with it.
            return Principal("token", "platform")
        if self.door == "off":
            return Refusal(
                404,
                "door_closed",
                "calls by function name are off on this platform (fissile up --function-door"
                " off): call it through one of its routes",
            )
        value = key_value(headers)
        key = None if value is None else self.keys.find(value)
        if key is not None:
            if not key.allows(function):
                return Refusal(403, "forbidden", f"API key {key.name!r} may not call {function!r}")
            return Principal("apikey", key.name, key=key, consumed=carrier(headers))
        why = (
            f"function {function!r} has a route that asks for credentials"
            if self.door == "auto"
            else "this platform's function doors ask for credentials"
        )
        return Refusal(
            401,
            "unauthorized",
            f"{why}: call it by name with the platform token or an API key (X-API-Key),"
            " or through its route",
            b'Bearer realm="fissile"',
        )

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        framed = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                framed = True
                try:
                    if int(value) > self.max_body:
                        raise BodyTooLarge
                except ValueError:
                    pass
            elif name == b"transfer-encoding":
                framed = True
            elif name == REFUSED_BODY:
                raise BodyTooLarge
        if not framed:
            return b""  # HTTP/1.1: no length, no chunks, no body (a GET): skip a receive()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def encode_forward(
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    scheme: str,
    client: str | None,
    function: str,
    params: dict[str, str],
    body: bytes,
    timeout: float,
    prefix: str | None = None,
    trip: Trip | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
    memo: list[Any] | None = None,
) -> bytes:
    """The request a client sent, as one complete HTTP/1.1 request for an instance: its
    end-to-end headers (names in lower case) and the platform's metadata.

    ``target`` is the request target as the client sent it (path and query, still encoded);
    ``prefix`` the route prefix it matched, which a whole app takes as its mount point.
    The instance gets a ``traceparent`` naming the router's hop in the client's trace (a
    valid client ``traceparent``) or in a new one; ``trip`` learns the invocation and trace
    ids; ``extra`` are more metadata lines (the caller's identity).

    ``memo``, a list kept by the caller (a connection), remembers the part of the last
    request that its request line, headers, function and client decide (``_forward_head``):
    a keep-alive client sends the same head again and again (wrk, a browser polling, a
    service's HTTP client), and the part is then reused as it is."""
    # Bytes throughout, and the parts fixed per function and client cached: this was ~12 % of
    # the router's CPU per request under wrk (py-spy) when built from f-strings; one cache
    # look-up instead of two, the per-request lines from one template and a GET's constant
    # content-length took it from 1.39 to 1.13 µs (timeit, wrk's GET). The head remembered
    # per connection: 4.0 to 2.9 µs with wrk's one header, 7.2 to 3.0 µs with nine (timeit,
    # on a loaded machine).
    key = (method, target, scheme, client, function, timeout)
    if memo is not None and memo[0] == key and memo[1] == headers:
        head, per_request, tail, continued = memo[2]
    else:
        head, per_request, tail, continued = parts = _forward_head(
            method, target, headers, scheme, client, function, timeout
        )
        if memo is not None:
            memo[:] = (key, headers, parts)
    invocation = next(_invocations)
    # One draw for both ids: the span's 64 bits and a new trace's 128. The ids come from
    # random.getrandbits (tracecontext.py). A new trace id is formatted once, as bytes: the
    # access log's writer decodes it rather than format it again.
    bits = _getrandbits(192)
    span = bits & _SPAN_BITS or 1
    trace: bytes | str
    if continued is None:
        trace = b"%032x" % (bits >> 64 or 1)
        traceparent = b"traceparent: 00-%s-%016x-01\r\n" % (trace, span)
    else:
        trace_id, _, flags = continued
        trace = trace_id
        traceparent = b"traceparent: 00-%s-%016x-%s\r\n" % (
            trace_id.encode(),
            span,
            flags.encode(),
        )
    lines = [head, per_request % invocation, tail, traceparent]
    if trip is not None:
        trip.invocation = invocation
        trip.trace = trace
        trip.span = span
        if continued is not None:
            trip.parent, trip.flags = continued.parent_id, continued.flags
    if prefix is not None:
        lines.append(_route_prefix(prefix))
    if extra:
        for name, value in extra:
            lines += (name, b": ", value, b"\r\n")
    if params:
        meta = [f"x-fissile-params: {json.dumps(params)}"]
        # Path params are percent-decoded: escape control characters again so a value
        # cannot end the header line (CR LF) and smuggle headers into the instance.
        for key_, param in params.items():
            safe = _header_safe(param)
            meta += (f"x-fissile-params-{key_}: {safe}", f"{_fission_param(key_)}: {safe}")
        lines.append(("\r\n".join(meta) + "\r\n").encode("latin-1", "replace"))
    if body:
        lines += (b"content-length: %d\r\n\r\n" % len(body), body)
    else:
        lines.append(b"content-length: 0\r\n\r\n")  # a GET's: no formatting
    return b"".join(lines)


def _forward_head(
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    scheme: str,
    client: str | None,
    function: str,
    timeout: float,
) -> tuple[bytes, bytes, bytes, tracecontext.TraceParent | None]:
    """What ``encode_forward`` takes from the request's line and headers, the function and
    the client: the request line, end-to-end headers and fixed metadata; the template of the
    invocation id's line; the full URL's host and target; the client's trace, if valid."""
    lines = [method.encode(), b" ", target, b" HTTP/1.1\r\n"]
    host = b""
    parent: bytes | None = None
    for name, value in headers:
        if name in _HOP_BY_HOP or name.startswith(_PLATFORM_HEADERS):
            continue
        if name == b"host":
            host = value
        elif name == b"traceparent":
            parent = value  # replaced by the router's hop
            continue
        lines += (name, b": ", value, b"\r\n")
    fixed, per_request = _fixed_meta(function, timeout, scheme, client)
    lines.append(fixed)
    continued = None if parent is None else tracecontext.parse(parent)
    return b"".join(lines), per_request, host + target + b"\r\n", continued


@functools.lru_cache(maxsize=4096)
def _fixed_meta(
    function: str, timeout: float, scheme: str, client: str | None
) -> tuple[bytes, bytes]:
    """The metadata lines that are the same for every request of ``function`` from
    ``client``, and the template of the per-request ones (the invocation id's counter, then
    the host and target of the full URL follow)."""
    text = f"x-fissile-function: {function}\r\nx-fissile-timeout: {timeout:g}\r\n"
    text += f"x-forwarded-proto: {scheme}\r\n"
    if client:
        text += f"x-forwarded-for: {client}\r\n"
    per_request = b"x-fissile-invocation-id: %s%%08x\r\nx-fissile-full-url: %s://" % (
        _INVOCATION_PREFIX,
        scheme.encode("latin-1", "replace"),
    )
    return text.encode("latin-1", "replace"), per_request


@functools.lru_cache(maxsize=4096)
def _route_prefix(prefix: str) -> bytes:
    # Percent-encoded: a prefix may hold characters a header cannot.
    return b"x-fissile-route-prefix: %s\r\n" % quote(prefix, safe="/").encode("ascii")


def _async_headers(
    scope: Scope, function: str, params: dict[str, str]
) -> tuple[list[tuple[str, str]], str | None]:
    """The headers an asynchronous invocation will carry to its function (the platform's own
    metadata is added when it runs), and the callback URL the client asked for."""
    headers: list[tuple[str, str]] = []
    callback: str | None = None
    host = ""
    continued: tuple[str, str, str] | None = None
    for name, value in scope["headers"]:
        if name == b"x-callback-url":
            callback = value.decode("latin-1")
            continue
        if name == b"traceparent":
            continued = tracecontext.parse(value)
            continue
        if name in _HOP_BY_HOP or name == b"prefer" or name.startswith(_PLATFORM_HEADERS):
            continue
        if name == b"host":
            host = value.decode("latin-1")
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    scheme = scope.get("scheme", "http")
    target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    if scope["query_string"]:
        target += "?" + scope["query_string"].decode("latin-1")
    headers += [
        ("x-fissile-full-url", f"{scheme}://{host}{target}"),
        ("x-forwarded-proto", scheme),
    ]
    # The invocation runs later in the client's trace: accepting it is the hop that follows
    # the client's span (the invocations service records it), or the root of a new trace.
    if continued is not None:
        headers.append((tracecontext.HEADER, tracecontext.format(*continued)))
    client = scope.get("client")
    if client:
        headers.append(("x-forwarded-for", client[0]))
    if params:
        headers.append(("x-fissile-params", json.dumps(params)))
        headers += [(f"x-fissile-params-{k}", _header_safe(v)) for k, v in params.items()]
        headers += [(_fission_param(k), _header_safe(v)) for k, v in params.items()]
    return headers, callback


@functools.lru_cache(maxsize=1024)
def _fission_param(name: str) -> str:
    """Fission's router header for a path parameter: Go's canonical form of
    ``X-Fission-Params-<name>`` (``id`` → ``X-Fission-Params-Id``, ``userId`` → ``...-Userid``)."""
    return "X-Fission-Params-" + name.capitalize()


def _header_safe(value: str) -> str:
    if value.isprintable():
        return value
    return quote(value, safe="".join(chr(c) for c in range(0x20, 0x7F)))


async def _stream_body(send: Send, receive: Receive, stream: BodyStream) -> None:
    """A streamed body through ASGI: uvicorn's ``send`` waits while the client's transport is
    full, and the reader pauses the instance while pieces wait. A body that breaks off leaves
    the response incomplete: uvicorn then closes the connection (the client sees fewer bytes
    than declared, or no chunked terminator). A client that leaves cancels the stream (uvicorn's
    ``send`` would drop the rest silently, to the body's end)."""
    reader = BodyReader(stream)
    watch = asyncio.ensure_future(_disconnect(receive))
    watch.add_done_callback(lambda _: reader.cancel())
    try:
        while data := await reader.read():
            await send({"type": "http.response.body", "body": data, "more_body": True})
    except (InstanceGone, ResponseTooLarge, ResponseTimedOut):
        return
    finally:
        watch.cancel()
        reader.cancel()
    await send({"type": "http.response.body", "body": b""})


async def _disconnect(receive: Receive) -> None:
    """Returns when the client has gone (the request's body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class _Seen:
    """What the ASGI path's access log learns of a request: its function and route once
    resolved, how it was forwarded (``trip``), its status when its head is sent, and the body
    bytes sent after it."""

    __slots__ = ("_send", "function", "head", "route", "size", "status", "trip")

    def __init__(self, send: Send, started: float) -> None:
        self._send = send
        self.trip = Trip(started)
        self.function: str | None = None
        self.route: str | None = None
        self.status = 0
        self.head = 0.0  # when the response head was sent (time.monotonic()); 0.0: not yet
        self.size = 0

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            self.head = time.monotonic()
        elif kind == "http.response.body":
            self.size += len(message.get("body", b""))
        await self._send(message)

    def record(self, scope: Scope) -> Record:
        """The request's access-log record: its trip, with what the app answered."""
        trip = self.trip
        client = scope.get("client")
        trip.endpoint = (
            self.function,
            self.route,
            scope["method"],
            scope["path"],
            client[0] if client else None,
        )
        trip.status = self.status
        trip.size = self.size
        trip.duration = self.head - trip.started
        return trip


async def admit(guard: Guard, headers: list[tuple[bytes, bytes]]) -> Principal | Answer | None:
    """A guarded route's checks but CORS and the webhook signature, in order: its rate, the
    caller's credentials, the API key's rate. The caller (None when the route asks for no
    credentials), or the answer refusing the request."""
    if guard.broken is not None:
        return Answer(503, "route_unavailable", guard.broken)
    if guard.bucket is not None:
        wait = guard.bucket.take()
        if wait:
            return _too_many(f"route {guard.trigger!r}", wait)
    if guard.auth is None:
        return None
    checked = await guard.auth.check(headers)
    if isinstance(checked, Refusal):
        return _refused(checked)
    wait = _key_wait(checked)
    if wait:
        return _too_many(f"API key {checked.key.name!r}", wait)  # type: ignore[union-attr]
    return checked


def _key_wait(principal: Principal) -> float:
    """0.0, or how long the caller's API key must wait (its rate)."""
    key = principal.key
    if key is None or key.bucket is None:
        return 0.0
    return key.bucket.take()


def _header(headers: list[tuple[bytes, bytes]], name: bytes, default: bytes) -> bytes:
    for key, value in headers:
        if key == name:
            return value
    return default


def _allow(methods: Iterable[str], extra: list[tuple[bytes, bytes]] | None = None) -> Answer:
    """204 to an OPTIONS the router answers itself: what the path allows."""
    allowed = sorted(set(methods) | ({"HEAD"} if "GET" in methods else set()))
    answer = Answer(204, "", "", [(b"allow", ", ".join(allowed).encode()), *(extra or [])])
    answer.body = b""
    answer.headers = answer.headers[1:]  # no content
    return answer


def _refused(refusal: Refusal) -> Answer:
    headers = [] if refusal.challenge is None else [(b"www-authenticate", refusal.challenge)]
    return Answer(refusal.status, refusal.code, refusal.message, headers)


def _too_many(what: str, wait: float) -> Answer:
    return Answer(
        429,
        "rate_limited",
        f"{what} allows no more requests now; retry in {wait:.2g}s",
        [(b"retry-after", retry_after(wait))],
    )


def _adding(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    """``send`` with ``headers`` added to the response's head (a route's CORS headers)."""
    if not headers:
        return send

    async def adding(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *headers]}
        await send(message)

    return adding


async def _answer(send: Send, answer: Answer) -> None:
    headers = answer.headers
    if answer.status != 204:  # which has no content, nor a length (RFC 9110)
        headers = [*headers, (b"content-length", str(len(answer.body)).encode())]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
