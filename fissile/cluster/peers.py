"""Forwarding a request to another node's router, and the router's internal cluster endpoints.

A forwarded request carries ``x-fissile-hop`` (the forwarding node's name); a router never
forwards a request carrying it, so a request crosses at most one hop whatever the nodes believe
about each other. Connections to peers are kept alive (one httpx client per node); a peer that
dies mid-request fails that request alone, with ``502 peer_failed``.

A node forwards while it is drained (``fissile node drain``): it serves nothing new itself,
and every new request goes to a serving peer. It also forwards a request for a function it
holds no instance of while the cluster holds the function's ``max_scale`` instances elsewhere
(to a peer holding some: the least busy, ties in turn), or while its free memory is below the
function's memory limit (to the peer with the most free memory, if one has enough). And when
all its instances of the function are busy (and those starting are spoken for), it forwards
to a peer with a free slot of the function, or to the peer that should start the next
instance, which spreads a function's instances over the nodes (``cluster/placement.py``).
The view behind that choice is up to a heartbeat old: a peer it shows under ``max_scale``
may find the cluster full, and holding no instance answer ``503 no_capacity``. Such a request
is served here after all (this node's instances are merely busy), and that peer is not chosen
for the function again until the next view.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import httpx

from fissile._names import NAME_MAX, NAME_PATTERN
from fissile.cluster.artifacts import Artifacts
from fissile.cluster.nodes import DEAD_AFTER, NodeInfo, Nodes
from fissile.cluster.placement import choose
from fissile.executor.pools import FunctionPool
from fissile.router.app import CLUSTER_PREFIX

if TYPE_CHECKING:
    from fissile.cluster.logs import ClusterLogs
    from fissile.cluster.stats import ClusterStats

log = logging.getLogger("fissile.cluster")

HOP = b"x-fissile-hop"
NAME = re.compile(NAME_PATTERN)

# Hop-by-hop headers (RFC 9110 7.6.1) are the connection's, not the request's.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})

# A peer's ``503 no_capacity`` is the router's own small JSON answer: a longer body is not it.
_REFUSAL_MAX = 4096

Scope = dict[str, Any]
Receive = Any
Send = Any


class Peers:
    def __init__(self, nodes: Nodes, token: str, artifacts: Artifacts, timeout: float) -> None:
        self.nodes = nodes
        self.token = token
        self.artifacts = artifacts
        self._hop = nodes.name.encode()
        self.logs: ClusterLogs | None = None  # set by the cluster: the logs endpoint
        self.stats: ClusterStats | None = None  # and the stats endpoint
        self._turn = itertools.count()
        # What ``forwarding`` saw of the request it said yes to: its function, and the memory
        # a cold start of it needs when that was the reason.
        self._function: str | None = None
        self._memory = 0
        self._chosen: NodeInfo | None = None  # the peer placement chose, when it did
        # Requests forwarded to a peer for a function, by (peer, function): how many the
        # peer's heartbeat saw from this node, and how many are in flight now.
        self._trips: dict[tuple[str, str], _Trips] = {}
        self._seen_at: dict[tuple[str, str], int] = {}  # ``_Trips.at`` for the view below
        self._seen_view: object = None
        self._tickets = itertools.count()
        # Bumped whenever ``_trips`` or the peers skipped change: with the view (a new list at
        # each heartbeat) and the count here, what ``choose`` said for a function holds until
        # one of them changes, so a node saturated at max_scale asks it once, not per request.
        self._version = 0
        self._nowhere: tuple[object, str, int, int] | None = None
        self._unreachable: dict[str, float] = {}  # peer -> until when it is not tried
        # (peer, function) whose placed requests the peer refused (503 no_capacity), and the
        # view they were refused in: not chosen for the function again until the next view.
        self._refused: set[tuple[str, str]] = set()
        self._refused_view: object = None
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=5.0),
            # Idle connections are dropped before a peer's router would close them (its
            # --keep-alive-timeout, 5 s by default), so a request rarely meets a closing one.
            limits=httpx.Limits(
                max_connections=None, max_keepalive_connections=64, keepalive_expiry=2.0
            ),
        )

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.stats is not None:
            await self.stats.aclose()

    def forwarding(
        self, headers: list[tuple[bytes, bytes]], pool: FunctionPool | None = None
    ) -> bool:
        """Whether the router should hand this request to a peer rather than serve it: this
        node is drained; or the function has no instance here and either the cluster holds
        its ``max_scale`` elsewhere (as of the peers' last heartbeats or claims) or this node
        lacks the memory to start one that a peer has; or every instance here is busy and
        placement names a peer (``_spreading``). Never for a request forwarded once already."""
        memory = 0
        if not self.nodes.draining:
            if pool is None:
                return False
            if pool.instances:
                # The common case, one comparison: an instance here has room.
                if pool.inflight < len(pool.instances) * pool.limit:
                    return False
                return self._spreading(headers, pool)
            if self.nodes.elsewhere(pool.name) + pool.starting < pool.spec.max_scale:
                free = self.nodes.memory_free
                if not free or free >= pool.spec.memory:
                    # A cold start stays here; a request past the ones starting may not.
                    return bool(pool.starting) and self._spreading(headers, pool)
                memory = pool.spec.memory  # a cold start goes where there is room for it
        if _hopped(headers):
            return False  # forwarded once already: served here, whatever the state
        self._function = pool.name if pool is not None else None
        self._memory = memory
        self._chosen = None
        return self.target(self._function, memory) is not None

    def _spreading(self, headers: list[tuple[bytes, bytes]], pool: FunctionPool) -> bool:
        """Whether a request that no instance here can take at once (and none starting
        either) goes to a peer: one with a free slot, or the one that should start the next
        instance (``placement.choose``)."""
        if len(pool.waiters) < pool.starting * pool.limit:
            return False  # an instance starting here will take it
        held = len(pool.instances) + pool.starting
        nowhere = self._nowhere
        if (
            nowhere is not None
            and nowhere[0] is self.nodes.peers
            and nowhere[1:] == (pool.name, held, self._version)
        ):
            return False  # nothing changed since ``choose`` said to wait here
        if pool.pick() is not None:
            return False  # an instance here has room (one draining held the count up)
        if _hopped(headers):
            return False  # a peer chose this node: it serves here (starting one if it must)
        chosen = choose(
            pool.name,
            held=held,
            memory=pool.spec.memory,
            memory_free=self.nodes.memory_free,
            max_scale=pool.spec.max_scale,
            limit=pool.limit,
            peers=self.nodes.peers,
            forwarded=self._forwarded(pool.name) if self._trips else {},
            unreachable=self._skipped(pool.name),
        )
        if chosen is None:
            self._nowhere = (self.nodes.peers, pool.name, held, self._version)
            return False
        self._function = pool.name
        self._memory = 0
        self._chosen = chosen
        return True

    def _forwarded(self, function: str) -> dict[str, tuple[int, int]]:
        """For each peer, the requests for ``function`` this node had forwarded to it and not
        yet seen answered at the peer's heartbeat in the view, and those in flight now."""
        peers = self.nodes.peers
        if self._seen_view is not peers:  # a new view: the peers' heartbeats moved on
            self._seen_view = peers
            self._seen_at.clear()
        forwarded: dict[str, tuple[int, int]] = {}
        for node in peers:
            key = (node.name, function)
            trips = self._trips.get(key)
            if trips is None:
                continue
            seen = self._seen_at.get(key)
            if seen is None:
                # The peer's heartbeat on this node's clock: when the view was read, less
                # the row's age then. What was in flight at that moment never changes.
                seen = self._seen_at[key] = trips.at(self.nodes.viewed_at - node.age)
            forwarded[node.name] = (seen, len(trips.flying))
        return forwarded

    def _skipped(self, function: str | None = None) -> set[str]:
        """The peers not tried for now: unreachable ones, and (with ``function``) those that
        refused to start an instance of it in the current view."""
        skipped: set[str] = set()
        if self._unreachable:
            now = time.monotonic()
            skipped = {name for name, until in self._unreachable.items() if until >= now}
        if self._refused and function is not None:
            if self._refused_view is self.nodes.peers:
                skipped.update(peer for peer, refused in self._refused if refused == function)
            else:  # a new view: the peers' counts moved on
                self._refused.clear()
        return skipped

    def _refuse(self, peer: str, function: str) -> None:
        if self._refused_view is not self.nodes.peers:
            self._refused.clear()
            self._refused_view = self.nodes.peers
        self._refused.add((peer, function))
        self._version += 1

    def target(self, function: str | None = None, memory: int = 0) -> NodeInfo | None:
        """The serving peer to forward to. With ``memory``, the one with the most free memory
        among those with that much (None if none has). Otherwise the one with the fewest
        requests in flight (ties taken in turn), among those holding instances of
        ``function`` if any does."""
        serving = [node for node in self.nodes.peers if node.serving]
        if self._unreachable:
            now = time.monotonic()
            serving = [node for node in serving if self._unreachable.get(node.name, 0) < now]
        if memory:
            roomy = [node for node in serving if node.memory_free >= memory]
            return max(roomy, key=lambda node: node.memory_free) if roomy else None
        if function is not None:
            holding = [node for node in serving if node.functions.get(function)]
            serving = holding or serving
        if not serving:
            return None
        least = min(node.inflight for node in serving)
        quiet = [node for node in serving if node.inflight == least]
        return quiet[next(self._turn) % len(quiet)]

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Send the request to a peer and its answer to the client: None once answered.

        When placement chose the peer (this node could serve the request, only busier), the
        request is served here after all if the peer failed before answering, or refused it
        with ``503 no_capacity`` (the cluster was at ``max_scale`` and it holds no instance)
        before any of its answer went to the client: then the receive to serve it with, which
        gives again what was read of the request's body."""
        # ``forwarding`` ran just before, on this request, with nothing awaited in between.
        function, memory, chosen = self._function, self._memory, self._chosen
        self._chosen = None
        placed = chosen is not None
        headers = [(n, v) for n, v in scope["headers"] if n not in _HOP_BY_HOP]
        headers.append((HOP, self._hop))
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        # A bodiless GET, HEAD or OPTIONS may be sent again to another peer when the first
        # fails before answering (idempotent, and nothing of the client's to replay).
        replayable = scope["method"] in _IDEMPOTENT and not any(
            n in (b"content-length", b"transfer-encoding") and v != b"0"
            for n, v in scope["headers"]
        )
        # A placed request's body is kept as it is sent, to serve it here if the peer refuses
        # it (as serving it here would have read it whole anyway).
        replay = _Replay(receive) if placed and not replayable else None
        body = None if replayable else _body(receive if replay is None else replay.reading)
        attempts = 0
        while True:
            peer = chosen or self.target(function, memory)
            chosen = None  # a second try goes where ``target`` says
            if peer is None:  # every peer went away since ``forwarding``
                await _error(send, 503, "no_peer", "no node of the cluster can serve this now")
                return None
            url = f"http://{peer.address}{target.decode('latin-1')}"
            request = self.client.build_request(scope["method"], url, headers=headers, content=body)
            # Counted as taking a slot of the function there until answered (``_forwarded``).
            key = (peer.name, function) if function is not None else None
            ticket = self._took(key)
            try:
                response = await self.client.send(request, stream=True)
                break
            except BaseException as exc:
                self._gave_back(key, ticket)
                if not isinstance(exc, httpx.HTTPError):
                    raise
                error = exc
            if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)):
                # Nothing was sent: another peer may take it. This one is skipped until its
                # heartbeat could tell (a dead node's row turns dead within DEAD_AFTER).
                log.warning("cluster: cannot reach %s: %s", peer.name, error)
                self._unreachable[peer.name] = time.monotonic() + DEAD_AFTER
                self._version += 1
                if placed:
                    return receive  # nothing of the body was read: served here after all
            else:
                why = str(error) or type(error).__name__  # a dropped connection has no message
                log.warning("cluster: forwarding to %s failed: %s", peer.name, why)
                attempts += 1
                if replayable and not isinstance(error, httpx.TimeoutException):
                    if placed:
                        return receive  # bodiless: served here after all
                    if attempts < 3:
                        # The connection broke before an answer: a kept-alive one the peer
                        # closed meanwhile, or a dying peer (whose next connect fails and
                        # skips it).
                        continue
                await _error(send, 502, "peer_failed", f"node {peer.name} failed: {why}")
                return None
        try:
            early: bytes | None = None  # the answer's body, when read before its head went out
            if placed and function is not None and _maybe_refusal(response):
                try:
                    early = b"".join([chunk async for chunk in response.aiter_raw()])
                except httpx.HTTPError as exc:
                    why = str(exc) or type(exc).__name__
                    await _error(send, 502, "peer_failed", f"node {peer.name} failed: {why}")
                    return None
                if _code(early) == "no_capacity":
                    # The peer could start no instance (the cluster is at max_scale, which the
                    # view did not show yet) and holds none: this node's busy ones will serve it.
                    self._refuse(peer.name, function)
                    log.info("cluster: %s has no capacity for %s: served here", peer.name, function)
                    return receive if replay is None else replay.again()
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (n, v) for n, v in response.headers.raw if n.lower() not in _HOP_BY_HOP
                    ]
                    + [(b"x-fissile-node", peer.name.encode())],
                }
            )
            if early is not None:
                await send({"type": "http.response.body", "body": early, "more_body": False})
                return None
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError as exc:
                # The head went out: the client sees a cut response, as from a dying instance.
                log.warning("cluster: %s failed mid-response: %s", peer.name, exc)
                return None
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._gave_back(key, ticket)
            await response.aclose()
        return None

    def _took(self, key: tuple[str, str] | None) -> int:
        ticket = next(self._tickets)
        if key is not None:
            trips = self._trips.get(key)
            if trips is None:
                trips = self._trips[key] = _Trips()
            trips.flying[ticket] = time.monotonic()
            self._version += 1
        return ticket

    def _gave_back(self, key: tuple[str, str] | None, ticket: int) -> None:
        if key is not None:
            self._trips[key].landed(ticket, time.monotonic())
            self._version += 1

    async def internal(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /_fissile/cluster/artifacts/<sha256>``: a build's archive, for peers only;
        ``logs/``, ``requests/`` and ``stats``: this node's share of ``fn logs`` and
        ``fissile top``."""
        if not self._authorized(scope["headers"]):
            await _error(send, 401, "unauthorized", "the cluster's endpoints need the token")
            return
        rest = scope["path"][len(CLUSTER_PREFIX) :]
        kind, _, digest = rest.partition("/")
        if scope["method"] == "GET" and kind in ("logs", "requests") and self.logs is not None:
            await self._logs(scope, send, kind, digest)
            return
        if scope["method"] == "GET" and kind == "stats" and self.stats is not None:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            status, body = await self.stats.serve(query)
            await _answer(send, status, b"application/json", body)
            return
        if scope["method"] != "GET" or kind != "artifacts":
            await _error(send, 404, "not_found", "no such cluster endpoint")
            return
        path = self.artifacts.local(digest)
        if path is None:
            await _error(send, 404, "not_found", f"no artifact {digest[:64]!r} on this node")
            return
        size = path.stat().st_size
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/x-tar"),
                    (b"content-length", str(size).encode()),
                ],
            }
        )
        with path.open("rb") as archive:
            while chunk := archive.read(1 << 20):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _logs(self, scope: Scope, send: Send, kind: str, function: str) -> None:
        """``GET /_fissile/cluster/{logs,requests}/<function>``: this node's lines of a
        function's log, or its last requests through this router."""
        assert self.logs is not None
        if len(function) > NAME_MAX or not NAME.fullmatch(function):
            await _error(send, 404, "not_found", "no such function name")
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if kind == "requests":  # the access log's memory belongs to the event loop
            status, body = self.logs.serve(kind, function, query)
        else:  # reading a log file is for a thread, not the loop the router shares
            status, body = await asyncio.to_thread(self.logs.serve, kind, function, query)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/x-ndjson"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        expected = b"Bearer " + self.token.encode()
        for name, value in headers:
            if name == b"authorization":
                return hmac.compare_digest(value, expected)
        return False


class _Trips:
    """The requests forwarded to one peer for one function: those in flight (when each was
    sent) and those answered in the last few seconds (when sent, when answered, in the order
    answered), enough to tell how many were in flight at any heartbeat a view can hold."""

    __slots__ = ("answered", "flying")

    KEPT = DEAD_AFTER + 1.0  # a heartbeat older than DEAD_AFTER is a dead node's: never asked

    def __init__(self) -> None:
        self.flying: dict[int, float] = {}
        self.answered: deque[tuple[float, float]] = deque()

    def landed(self, ticket: int, now: float) -> None:
        self.answered.append((self.flying.pop(ticket), now))
        while self.answered[0][1] < now - self.KEPT:
            self.answered.popleft()

    def at(self, moment: float) -> int:
        """How many were in flight at ``moment`` (a time.monotonic() in the last seconds)."""
        count = sum(1 for sent in self.flying.values() if sent <= moment)
        for sent, done in reversed(self.answered):
            if done <= moment:
                break  # answered in order: the older ones too
            if sent <= moment:
                count += 1
        return count


class _Replay:
    """The body of a request as it is read to be forwarded, kept to be read again."""

    __slots__ = ("_chunks", "_ended", "_receive")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._chunks: list[bytes] = []
        self._ended = False  # the last message of the body was read

    async def reading(self) -> Any:
        message = await self._receive()
        if message["type"] == "http.request":
            if message.get("body"):
                self._chunks.append(message["body"])
            self._ended = not message.get("more_body", False)
        return message

    def again(self) -> Receive:
        """A receive giving what was read, then what the client still sends."""
        body = b"".join(self._chunks)
        first = {"type": "http.request", "body": body, "more_body": not self._ended}
        pending: list[dict[str, Any]] = [first]
        receive = self._receive

        async def replayed() -> Any:
            if pending:
                return pending.pop()
            return await receive()

        return replayed


def _maybe_refusal(response: httpx.Response) -> bool:
    """Whether an answer may be a router's ``503 no_capacity``: small JSON, read whole."""
    if response.status_code != 503:
        return False
    headers = response.headers
    length = headers.get("content-length")
    return (
        headers.get("content-type", "").startswith("application/json")
        and "content-encoding" not in headers
        and length is not None
        and length.isdigit()
        and int(length) <= _REFUSAL_MAX
    )


def _code(body: bytes) -> str | None:
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None


def _hopped(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == HOP for name, _ in headers)


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


async def _answer(send: Send, status: int, content_type: bytes, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
