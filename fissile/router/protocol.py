"""The router's HTTP/1.1 protocol: plain synchronous function calls are parsed, forwarded and
answered here, straight from httptools' callbacks; every other request (the front door,
websockets, webhooks, the router's own error answers) is handed to uvicorn's protocol and the
ASGI router, on that connection from then on.

Why not uvicorn alone: under wrk, uvicorn's protocol and the ASGI layer (a scope dict, a task,
two send() messages per request) were ~60 % of the router's CPU for a hello (py-spy; 92 µs of
router CPU per request), more than the forwarding itself. uvicorn still owns the sockets,
shutdown and everything but the hot path; this protocol is its ``http`` class.
"""

from __future__ import annotations

import asyncio
import functools
import http
import logging
import time
from collections import deque
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from fissile.executor.connection import BodyStream, InstanceResponse
from fissile.executor.pools import FunctionPool
from fissile.router import websocket
from fissile.router.app import DROP_FROM_RESPONSE, REFUSED_BODY, Router, encode_forward
from fissile.router.limits import Connections
from fissile.router.proxy import Answer, Trip, forward, forward_soon
from fissile.router.routes import request_path
from fissile.router.tls import hurry_close

logger = logging.getLogger("fissile.router")
_monotonic = time.monotonic

# Request headers rewritten when a request is replayed to uvicorn's protocol (the body is
# re-framed with a content length, and a 100 Continue was already sent).
_REFRAMED = frozenset({b"content-length", b"transfer-encoding", b"expect"})
# Parsed requests waiting behind the one in flight (HTTP/1.1 pipelining) before reading pauses.
MAX_PIPELINED = 16
# Body bytes past which a request's packets are no longer kept for a pass-through hand-over.
MAX_RAW = 1 << 20
# Seconds a refused connection is still read from (and what it sends dropped) before closing.
LINGER = 2.0

_STATUS_LINES: dict[int, bytes] = {}
# httptools' method bytes, as the str every request is given: a look-up, not a decode.
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")}


class _StopParsing(Exception):
    """Raised from a parser callback once the request is refused: the rest of the packet is
    not parsed (httptools raises it to ``feed_data``'s caller as an HttpParserError)."""


@functools.cache
def _full(limit: int) -> Answer:
    return Answer(
        503,
        "too_many_connections",
        f"the router has its limit of {limit} connections open",
        [(b"retry-after", b"1")],
    )


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


_default_lines: tuple[list[tuple[bytes, bytes]] | None, bytes] = (None, b"")


def _default_head(headers: list[tuple[bytes, bytes]]) -> bytes:
    """uvicorn's default response headers (date, server) as lines, joined once per list:
    uvicorn's server replaces the list when the date changes, once a second."""
    global _default_lines
    source, lines = _default_lines
    if source is not headers:
        lines = b"".join(b"%s: %s\r\n" % pair for pair in headers)
        _default_lines = (headers, lines)
    return lines


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "raw", "target", "upgrade", "version")

    def __init__(
        self,
        method: str,
        target: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
        upgrade: bool,
        raw: list[bytes] | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        # The packets it arrived in when it began at the start of one (and, perhaps, what
        # followed it in the last): what uvicorn's protocol can be given as it came.
        self.raw = raw

    def replay(self) -> bytes:
        """The request as bytes again, for uvicorn's protocol."""
        lines = [self.method.encode(), b" ", self.target, b" HTTP/", self.version.encode()]
        lines.append(b"\r\n")
        framed = False
        for name, value in self.headers:
            if name in _REFRAMED:
                framed = framed or name != b"expect"
                continue
            lines += [name, b": ", value, b"\r\n"]
        if framed or self.body:
            lines.append(b"content-length: %d\r\n" % len(self.body))
        lines += [b"\r\n", self.body]
        return b"".join(lines)


class RouterProtocol(asyncio.Protocol):
    """uvicorn builds one per connection: ``uvicorn.Config(router, http=RouterProtocol)``."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        if not isinstance(config.app, Router):
            raise TypeError("RouterProtocol serves a fissile Router")
        self.router: Router = config.app
        self.executor = self.router.executor
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: str | None = None
        self.scheme = "http"
        # A trusted proxy's connection: its X-Forwarded-* headers say who the client is (the
        # scheme, host and address a request is forwarded with, and the access log's client).
        self.via_proxy = False
        self.forwarded: tuple[str, str | None, list[tuple[bytes, bytes]]] = ("http", None, [])
        self.delegate: _Delegate | None = None
        # encode_forward's: the forwarded head of the last request, reused while they repeat.
        self.forward_memo: list[Any] = [None, None, None]
        # _respond's: the head of the last response written, reused while they repeat.
        self.respond_memo: list[Any] = [None, None, None, None, None, b""]
        self.upgraded = False  # everything received goes to the delegate as it comes
        self.queue: deque[_Request] = deque()
        self.busy = False
        self.keep_alive = True  # the request in flight's
        self.http10 = False  # the request in flight's: no chunked encoding in its response
        self.stream: BodyStream | None = None  # the body of the response being streamed
        self.write_paused = False  # the client's transport is above its high-water mark
        self.closing = False  # close once the response in flight is written
        # The access log (None when off) and what it records of the request in flight.
        self.access_log = self.router.access_log
        self.log_counts = self.router.log_counts  # its records count the requests (Trip)
        # The request in flight's trip, also its access-log record (a Record); a websocket's
        # handshake has one too (websocket.py).
        self.trip: Trip | None = None
        self.path = ""  # the path of the request last routed, as ``_direct`` decoded it
        # Limits (fissile/router/limits.py), copied here: read per header.
        self.connections: Connections = self.router.connections
        limits = self.connections.limits
        self.max_head = limits.max_header_bytes
        self.max_headers = limits.max_headers
        self.header_timeout = limits.header_timeout
        # Timed by the connections' sweep: when the head being read (or, on a new connection,
        # the first request) began, and when the connection fell idle; 0.0 when neither.
        self.head_since = 0.0
        self.idle_since = 0.0
        self.in_head = False  # a request has begun and its head is incomplete
        self.head_size = 0  # its target and header bytes, as the parser completed them
        # Bytes of packets that arrived while its head stayed incomplete: httptools keeps a
        # header being received to itself, so one endless header shows only here.
        self.head_spill = 0
        # Answered once the requests before it are (responses go out in order), then closed.
        self.refusal: Answer | None = None
        # The packets received since the request being parsed began, when it began a packet.
        self.chunk = b""
        self.raw: list[bytes] | None = None
        self.in_message = False
        self.completed_in_chunk = 0
        self.completing: _Request | None = None
        # The request being parsed.
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.refused = False

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.connections.add(self, self.loop, self.config.timeout_keep_alive):
            # Full: answered without reading, so a flood of connections costs one fd each
            # only for a moment.
            self.refused = True
            full = _full(self.connections.limits.max_connections or 0)
            self._respond(full.status, full.headers, full.body, keep_alive=False)
            transport.close()
            return
        self.server_state.connections.add(self)  # type: ignore[arg-type]
        self.head_since = self.loop.time()
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.client = str(peer[0])
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        trusted = self.router.trusted
        self.via_proxy = trusted is not None and trusted.trusts(self.client)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # answered (or about to be): the rest is not read
        if self.upgraded and self.delegate is not None:
            self.chunk = data
            self.delegate.data_received(data)
            if self.in_head and not self.refused:
                self._spilled(len(data))
            return
        self.chunk = data
        self.completed_in_chunk = 0
        if self.in_message and self.raw is not None:
            if self.size < MAX_RAW:
                self.raw.append(data)
            else:
                self.raw = None  # a large body is replayed rather than kept twice
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self.upgraded:
                return
            # uvicorn's protocol performs the websocket handshake and swaps the transport's
            # protocol; a websocket client sends nothing more before the 101.
            self.queue.append(self._parsed(upgrade=True))
            self._next()
        except httptools.HttpParserError as exc:
            if not self.refused and not self.upgraded:
                self._refuse(Answer(400, "bad_request", f"invalid HTTP request: {exc}"))
        else:
            if self.in_head:
                self._spilled(len(data))

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        self.connections.discard(self)
        self.queue.clear()
        self.transport = None
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.cancel()
        if self.delegate is not None:
            self.delegate.connection_lost(exc)

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        # A client that does not read its responses stops being read from, and the instance
        # streaming to it stops being read from too (its writes then block).
        if self.delegate is not None:
            self.delegate.pause_writing()
            return
        self.write_paused = True
        if self.stream is not None:
            self.stream.pause()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.delegate is not None:
            self.delegate.resume_writing()
            return
        self.write_paused = False
        if self.stream is not None:
            self.stream.resume()
        if self.transport is not None:
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """uvicorn's graceful stop: close now if idle, else after the response in flight."""
        if self.delegate is not None:
            self.delegate.shutdown()
        elif self.busy or self.queue:
            self.closing = True
        elif self.transport is not None:
            self.transport.close()
        hurry_close(self.transport)

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_message = True
        if self.completed_in_chunk == 0:
            self.raw = [self.chunk]
            self.head_spill = 0
        else:
            # Begun mid-packet: only the packets after this one count as spilled.
            self.raw = None
            self.head_spill = -len(self.chunk)
        self.target = b""
        self.headers = []
        self.body = []
        self.size = 0
        self.in_head = True
        self.head_size = 0
        self.head_since = self.loop.time()
        self.idle_since = 0.0

    def on_url(self, url: bytes) -> None:
        self.target += url
        self.head_size += len(url)
        if self.head_size > self.max_head:
            self._refuse_head(too_many=False)
            raise _StopParsing

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.max_head or len(self.headers) > self.max_headers:
            self._refuse_head(too_many=self.head_size <= self.max_head)
            raise _StopParsing

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_since = 0.0
        if self.refused or self.upgraded:
            return
        for name, value in self.headers:
            if name == b"content-length":
                try:
                    too_large = int(value) > self.router.max_body
                except ValueError:
                    continue
                if too_large:
                    self._too_large()
                    raise _StopParsing
            elif (
                name == b"expect"
                and value.lower() == b"100-continue"
                and self.transport is not None
                and not self.queue
                and not self.busy
            ):
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.refused or self.upgraded:
            return
        self.size += len(body)
        if self.size > self.router.max_body:
            self._too_large()
            raise _StopParsing
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        self.completed_in_chunk += 1
        parser = self.parser
        if self.refused or self.upgraded or parser.should_upgrade():
            return  # an upgrade is queued when feed_data raises HttpParserUpgrade
        # self._parsed(upgrade=False), inlined: once per request.
        body = self.body
        method = parser.get_method()
        request = _Request(
            _METHODS.get(method) or method.decode("ascii"),
            self.target,
            parser.get_http_version(),
            self.headers,
            body[0] if len(body) == 1 else b"".join(body),
            parser.should_keep_alive(),
            False,
            self.raw,
        )
        queue = self.queue
        queue.append(request)
        if len(queue) > MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
        self.completing = request
        self._next()
        self.completing = None

    # -- serving ------------------------------------------------------------------------

    def _parsed(self, upgrade: bool) -> _Request:
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        keep_alive = not upgrade and self.parser.should_keep_alive()
        return _Request(
            self.parser.get_method().decode("ascii"),
            self.target,
            self.parser.get_http_version(),
            self.headers,
            body,
            keep_alive,
            upgrade,
        )

    def _next(self) -> None:
        """Serve the next parsed request, unless one is in flight (responses go out in order)."""
        while self.queue and not self.busy and self.transport is not None:
            request = self.queue.popleft()
            if self.delegate is not None:
                self._relay(request)
                continue
            if request.upgrade and websocket.start(self, request):
                return  # the connection is the websocket's from now on
            # self._direct(request), inlined: once per request.
            direct = None
            if not request.upgrade and request.method != "HEAD":
                path = request_path(request.target)
                if path is not None:
                    self.path = path
                    headers = request.headers
                    if self.via_proxy:
                        # Routes bound to a host match the forwarded one.
                        self.forwarded = self._forwarded(headers)
                        headers = self.forwarded[2]
                    direct = self.router.direct(request.method, path, headers)
            if direct is None:
                self._hand_over()
                if self._pass_through(request):
                    return
                self._relay(request)
                continue
            self.busy = True
            pool, params, prefix, route = direct
            self.keep_alive = request.keep_alive
            self.http10 = request.version == "1.0"
            # Counted into the function's metrics when answered (proxy.py), and logged.
            self.trip = trip = Trip(_monotonic(), self.log_counts)
            method = request.method
            function = pool.name
            scheme, client, headers = self.scheme, self.client, request.headers
            if self.via_proxy:
                scheme, client, headers = self.forwarded  # as _direct resolved them
            if self.access_log is not None:
                # The path as routed above. A tuple of its own for each request: the log's
                # formatter finds what repeats (_records.c), cheaper there than here.
                trip.endpoint = (function, route, method, self.path, client)
            try:
                data = encode_forward(
                    method,
                    request.target,
                    headers,
                    scheme,
                    client,
                    function,
                    params,
                    request.body,
                    pool.timeout,
                    prefix,
                    trip,
                    memo=self.forward_memo,
                )
            except Exception:
                logger.exception("router: cannot forward %s %r", request.method, request.target)
                self._answered(Answer(500, "internal_error", "the router cannot forward this"))
                continue
            if forward_soon(self.executor, pool, data, self._answered, trip):
                continue
            # No instance with room and an open connection: wait for one in a task.
            task = self.loop.create_task(self._serve(pool, data, trip))
            self.server_state.tasks.add(task)
            task.add_done_callback(self.server_state.tasks.discard)
        if (
            not self.queue
            and not self.busy
            and self.delegate is None
            and self.transport is not None
        ):
            if self.refusal is not None:
                self._send_refusal()
                return
            self.transport.resume_reading()
            if self.closing:
                self.transport.close()
            elif not self.in_message:
                self.idle_since = self.loop.time()

    def _direct(
        self, request: _Request
    ) -> tuple[FunctionPool, dict[str, str], str | None, str | None] | None:
        if request.method == "HEAD":
            return None
        path = request_path(request.target)
        if path is None:
            return None
        self.path = path
        headers = request.headers
        if self.via_proxy:
            # Routes bound to a host match the forwarded one.
            self.forwarded = self._forwarded(headers)
            headers = self.forwarded[2]
        return self.router.direct(request.method, path, headers)

    def _forwarded(
        self, headers: list[tuple[bytes, bytes]]
    ) -> tuple[str, str | None, list[tuple[bytes, bytes]]]:
        """A trusted proxy's request as the client made it (fissile/router/forwarded.py)."""
        trusted = self.router.trusted
        if trusted is None or self.client is None:
            return self.scheme, self.client, headers
        seen = trusted.resolve(self.scheme, self.client, headers)
        if seen is None:
            return self.scheme, self.client, headers
        scheme, client, headers, _ = seen
        return scheme, client, headers

    async def _serve(self, pool: FunctionPool, data: bytes, trip: Trip) -> None:
        try:
            result = await forward(self.router.executor, pool, data, trip=trip)
        except Exception:
            logger.exception("router: forwarding to %s failed", pool.name)
            result = Answer(500, "internal_error", "the router failed to serve this request")
        self._answered(result)

    def _answered(self, result: InstanceResponse | Answer) -> None:
        access_log = self.access_log
        if access_log is not None:
            trip = self.trip
            if trip is not None:
                # The trip is the record (Trip is a Record): its endpoint set when it was
                # routed, its status and size now, it is added as it is: by the log's
                # journal, formatted and counted in one C call while its fields are still in
                # the CPU's caches (AccessLog.record).
                trip.status = result.status
                trip.size = len(result.body) if result.stream is None else result.length
                # Loaded, then called: called as ``access_log.record(trip)``, an instance's
                # attribute goes through an unspecialised method lookup (~0.3k instructions a
                # request, callgrind).
                record = access_log.record
                try:
                    due = record(trip)
                except TypeError:  # a field C does not take: spelt in Python
                    access_log.add(trip)
                else:
                    if due:
                        access_log.due(due)
        if result.stream is not None:
            self._stream(result)
            return
        self._respond(result.status, result.headers, result.body, self.keep_alive)
        self.busy = False
        self._next()

    def _respond(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # the client left; the function's work is done regardless
        if not keep_alive:
            self.closing = True
        # The head is remembered per connection and written again while the response's
        # status, headers (the instance's content type and length: a repeated call's are
        # the same), length and uvicorn's default headers (their date: once a second) are.
        size = len(body)
        default = self.server_state.default_headers
        memo = self.respond_memo
        if (
            memo[0] is default
            and memo[1] == status
            and memo[2] == size
            and memo[3] == keep_alive
            and memo[4] == headers
        ):
            head = memo[5]
        else:
            lines = [status_line(status), _default_head(default)]
            for name, value in headers:
                if name.lower() not in DROP_FROM_RESPONSE:
                    lines += (name, b": ", value, b"\r\n")
            lines.append(b"content-length: %d\r\n" % size)
            if not keep_alive:
                lines.append(b"connection: close\r\n")
            lines.append(b"\r\n")
            head = b"".join(lines)
            memo[:] = (default, status, size, keep_alive, headers, head)
        transport.write(head + body)

    def _stream(self, response: InstanceResponse | Answer) -> None:
        """Write a streamed response's head now and its body as it comes (``_ClientBody``);
        the next request waits until it has ended."""
        assert isinstance(response, InstanceResponse) and response.stream is not None
        stream = response.stream
        transport = self.transport
        if transport is None or transport.is_closing():
            stream.cancel()  # the client left
            self.busy = False
            self._next()
            return
        lines = [status_line(response.status), _default_head(self.server_state.default_headers)]
        for name, value in response.headers:
            if name.lower() not in DROP_FROM_RESPONSE:
                lines += [name, b": ", value, b"\r\n"]
        chunked = False
        if response.length is not None:
            lines.append(b"content-length: %d\r\n" % response.length)
        elif not self.http10:
            lines.append(b"transfer-encoding: chunked\r\n")
            chunked = True
        else:
            self.keep_alive = False  # the body ends where the connection does
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
            self.closing = True
        lines.append(b"\r\n")
        transport.write(b"".join(lines))
        self.stream = stream
        if self.write_paused:
            stream.pause()
        stream.attach(_ClientBody(self, transport, chunked))

    def _streamed(self, error: Exception | None) -> None:
        """The streamed response ended: whole, or cut (the client sees the connection close
        before the body's declared length or the chunked terminator)."""
        self.stream = None
        if error is not None:
            if self.transport is not None:
                self.transport.close()
            return
        self.busy = False
        self._next()

    def _too_large(self) -> None:
        if self.delegate is not None:
            # uvicorn's protocol may still be answering earlier requests: it answers this one
            # after them (Router.http reads the mark), then closes; the body is not read.
            head = _Request(
                self.parser.get_method().decode("ascii"),
                self.target,
                self.parser.get_http_version(),
                [*self.headers, (REFUSED_BODY, b"1"), (b"connection", b"close")],
                b"",
                keep_alive=False,
                upgrade=False,
            )
            self.delegate.data_received(head.replay())
            self.refused = True
            return
        limit = f"{self.router.max_body} bytes"
        self._refuse(Answer(413, "body_too_large", f"request body exceeds {limit}"))

    def _refuse(self, answer: Answer) -> None:
        """Answer and close: the rest of what the client sends is not read. Responses go out
        in order: requests received before this one are answered first."""
        self.refused = True
        self.head_since = self.idle_since = 0.0
        self.refusal = answer
        if self.transport is None:
            return
        if self.busy or self.queue or (self.delegate is not None and self.delegate.answering()):
            self.transport.pause_reading()
            return
        self._send_refusal()

    def _send_refusal(self) -> None:
        answer, self.refusal = self.refusal, None
        transport = self.transport
        if transport is None:
            return
        if answer is not None:
            self._respond(answer.status, answer.headers, answer.body, keep_alive=False)
        if transport.is_closing() or not transport.can_write_eof():
            transport.close()
            return
        # Half-close, and drop what the client still sends for a moment: closing with unread
        # data makes the kernel reset the connection, and a client still sending may then lose
        # the answer.
        transport.write_eof()
        transport.resume_reading()
        self.loop.call_later(LINGER, transport.close)

    def _refuse_head(self, too_many: bool) -> None:
        if too_many:
            answer = Answer(
                431, "too_many_headers", f"more than {self.max_headers} request headers"
            )
        else:
            answer = Answer(
                431,
                "headers_too_large",
                f"request target and headers exceed {self.max_head} bytes",
            )
        self._refuse(answer)

    def _spilled(self, size: int) -> None:
        self.head_spill += size
        if self.head_spill > self.max_head:
            self._refuse_head(too_many=False)

    def expire(self, now: float) -> None:
        """The connections' sweep: 408 for a head (or a first request) not received within
        the header timeout; close a connection idle past the keep-alive timeout."""
        if self.transport is None or self.refused:
            return
        if self.head_since and now - self.head_since > self.header_timeout:
            self._refuse(
                Answer(
                    408,
                    "header_timeout",
                    f"request head not received within {self.header_timeout:g}s",
                )
            )
        elif (
            self.idle_since
            and now - self.idle_since > self.config.timeout_keep_alive
            and self.delegate is None
            and not self.busy
            and not self.queue
        ):
            self.idle_since = 0.0
            self.transport.close()

    # -- the ASGI path ------------------------------------------------------------------

    def _hand_over(self) -> None:
        """From now on uvicorn's protocol serves this connection; requests are replayed to it
        as this parser completes them (a request may begin mid-packet, after a pipelined one,
        so raw bytes cannot simply be passed on)."""
        assert self.transport is not None
        self.idle_since = 0.0  # uvicorn's protocol times idle connections out itself
        self.server_state.connections.discard(self)
        self.delegate = _Delegate(
            self, config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        self.delegate.connection_made(self.transport)

    def _pass_through(self, request: _Request) -> bool:
        """Give uvicorn's protocol the packets ``request`` came in, and everything after, as
        they are: possible when it began a packet and is being served as it completes (nothing
        queued behind it, no 100 Continue sent for it). A browser or an HTTP client sends one
        request per packet: its connection then costs the router nothing more (replaying every
        request cost ~20 % of the front door's throughput)."""
        if (
            request is not self.completing
            or request.raw is None
            or self.queue
            or any(name == b"expect" for name, _ in request.headers)
        ):
            return False
        assert self.delegate is not None
        self.upgraded = True
        self.delegate.data_received(b"".join(request.raw))
        return True

    def _relay(self, request: _Request) -> None:
        assert self.delegate is not None
        self.delegate.data_received(request.replay())
        if request.upgrade:
            # What follows is the upgraded protocol's, not HTTP: passed on as it comes.
            self.upgraded = True


class _Delegate(HttpToolsProtocol):
    """uvicorn's protocol, held to the router's limits: its heads count against the same
    header bytes, header count and header timeout (uvicorn's httptools protocol has none),
    and a malformed request after pipelined ones is answered after them, as on the router's
    own path (uvicorn answers it at once and closes, losing the responses before it)."""

    def __init__(
        self,
        owner: RouterProtocol,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
    ) -> None:
        super().__init__(config=config, server_state=server_state, app_state=app_state)
        self.owner = owner

    def answering(self) -> bool:
        """A request's response is still to be written."""
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        owner = self.owner
        owner.in_head = True
        owner.head_size = 0
        owner.head_spill = -len(owner.chunk)  # where in the packet it began is unknown
        owner.head_since = self.loop.time()

    def on_url(self, url: bytes) -> None:
        owner = self.owner
        if owner.refused:
            return
        super().on_url(url)
        owner.head_size += len(url)
        if owner.head_size > owner.max_head:
            owner._refuse_head(too_many=False)

    def on_header(self, name: bytes, value: bytes) -> None:
        owner = self.owner
        if owner.refused:
            return
        super().on_header(name, value)
        owner.head_size += len(name) + len(value) + 4
        if owner.head_size > owner.max_head or len(self.headers) > owner.max_headers:
            owner._refuse_head(too_many=owner.head_size <= owner.max_head)

    def on_headers_complete(self) -> None:
        owner = self.owner
        owner.in_head = False
        owner.head_since = 0.0
        if not owner.refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.owner.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.owner.refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        owner = self.owner
        if owner.refusal is not None and not self.answering():
            owner._send_refusal()

    def send_400_response(self, msg: str) -> None:
        if not self.owner.refused:
            self.owner._refuse(Answer(400, "bad_request", msg))

    def shutdown(self) -> None:
        super().shutdown()
        hurry_close(self.transport)

    def handle_websocket_upgrade(self) -> None:
        # The websocket protocol takes the transport: the router's protocol hears no more of
        # this connection (websockets keep their own ping timeouts).
        self.owner.head_since = 0.0
        self.owner.connections.discard(self.owner)
        super().handle_websocket_upgrade()


class _ClientBody:
    """The ``BodySink`` of a streamed response: each piece straight to the client's transport
    (flow control pauses the stream through ``RouterProtocol.pause_writing``)."""

    __slots__ = ("chunked", "protocol", "transport")

    def __init__(
        self, protocol: RouterProtocol, transport: asyncio.Transport, chunked: bool
    ) -> None:
        self.protocol = protocol
        self.transport = transport
        self.chunked = chunked

    def body(self, data: bytes) -> None:
        if self.chunked:
            self.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            self.transport.write(data)

    def end(self, error: Exception | None) -> None:
        if error is None and self.chunked:
            self.transport.write(b"0\r\n\r\n")
        self.protocol._streamed(error)
