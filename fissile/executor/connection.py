"""A keep-alive HTTP/1.1 client connection to one instance's unix socket.

Hand-written on ``asyncio.Protocol`` + httptools because this is the router's hot path: DESIGN.md
measured ≈ 30k req/s for raw asyncio against ≈ 12k for aiohttp's client and < 2k for httpx.

A response that is complete in the read its body began in (a hello, a JSON answer: the common
case), or a short one not chunked, is collected whole and handed over in one piece, as it always
was. Any other response (chunked and still coming, or more than ``BUFFERED_MAX`` bytes so far)
is *streamed*: its head is handed over as soon as its body begins, as an ``InstanceResponse``
whose ``stream`` is this connection, and its body flows to the ``BodySink`` its consumer
attaches, with reading from the instance paused whenever that consumer asks (asyncio flow
control). The supervisor then never holds more of a body than one read from the socket plus
what its consumer buffers. Deciding after each read rather than on the head keeps the
whole-response path free of any extra callback or header walk.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import httptools

# ``fissile up --max-response-body``'s default.
DEFAULT_MAX_RESPONSE_BODY = 1 << 30
# A body not chunked and not complete is collected until it passes this size, then streamed.
BUFFERED_MAX = 64 * 1024


class InstanceGone(Exception):
    """The instance closed the connection before a full response arrived."""


class ResponseTooLarge(Exception):
    """A response body grew past the platform's limit (``--max-response-body``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response body exceeds {limit} bytes")
        self.limit = limit


class BodySink(Protocol):
    """Where a streamed body goes, piece by piece."""

    def body(self, data: bytes) -> None: ...

    def end(self, error: Exception | None) -> None:
        """The body is complete (``None``), or can never be (the error says why)."""


class BodyStream(Protocol):
    """A body still arriving: attach one sink, and pause or resume its flow."""

    def attach(self, sink: BodySink) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def cancel(self) -> None:
        """The consumer is gone: stop the body (the instance's connection is closed)."""


class InstanceResponse:
    __slots__ = ("body", "headers", "keep_alive", "length", "status", "stream")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
        stream: BodyStream | None = None,
        length: int | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body  # b"" while ``stream`` is set: the body is still coming
        self.keep_alive = keep_alive
        self.stream = stream
        self.length = length  # the declared length of a streamed body, if it has one


Outcome = Callable[[InstanceResponse | Exception], None]


class InstanceConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[InstanceResponse] | None = None
        self.on_outcome: Outcome | None = None
        self.response: InstanceResponse | None = None  # parsed, not yet handed to on_outcome
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.closed = False
        # A streamed response's body: where it goes, what came before a sink was attached,
        # whether it is complete, and who asked to pause reading.
        self.streaming = False
        self.sink: BodySink | None = None
        self.pending: list[bytes] = []
        self.complete = False
        self.error: Exception | None = None
        self.paused = False
        self.chunked = False  # the response being parsed is
        # The router's function clock for requests on this connection (proxy._Clock), kept
        # armed between requests rather than armed and cancelled for each.
        self.clock: Any = None

    @classmethod
    async def open(cls, path: str) -> InstanceConnection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_unix_connection(cls, path)
        return protocol

    def request(self, data: bytes) -> asyncio.Future[InstanceResponse]:
        """Send one complete request and return a future of its response."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[InstanceResponse] = loop.create_future()
        if self.closed or self.transport is None:
            waiter.set_exception(InstanceGone("connection closed"))
            return waiter
        self.waiter = waiter
        self.headers = []
        self.body = []
        self.transport.write(data)
        return waiter

    def send(self, data: bytes, on_outcome: Outcome) -> None:
        """``request`` without a future: ``on_outcome`` gets the response, or the exception,
        straight from ``data_received`` (the router's hot path: no future, no call_soon)."""
        if self.closed or self.transport is None:
            on_outcome(InstanceGone("connection closed"))
            return
        self.on_outcome = on_outcome
        self.headers = []
        self.body = []
        self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- BodyStream (a streamed response's body) -----------------------------------------

    def attach(self, sink: BodySink) -> None:
        self.sink = sink
        pending, self.pending = self.pending, []
        for data in pending:
            sink.body(data)
        if self.complete or self.error is not None:
            self._end_stream()
        elif not self.paused and self.transport is not None:
            self.transport.resume_reading()

    def pause(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None and self.sink is not None:
            self.transport.resume_reading()

    def cancel(self) -> None:
        self.sink = None
        self.close()

    def _end_stream(self) -> None:
        sink, self.sink = self.sink, None
        self.streaming = False
        # Kept alive, the connection reads its next response as usual.
        self.paused = False
        if self.transport is not None:
            self.transport.resume_reading()
        if sink is not None:
            sink.end(self.error)

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(InstanceGone(f"malformed response from instance: {exc}"))
            self.close()
            return
        response, self.response = self.response, None
        if response is not None:
            # Called here, not from the parser's callback: what it does (write the client's
            # response, send this connection its next request) must not run inside feed_data.
            on_outcome, self.on_outcome = self.on_outcome, None
            if on_outcome is not None:
                on_outcome(response)
        elif self.streaming:
            if self.complete and self.sink is not None:
                self._end_stream()  # out of feed_data too: the sink may reuse this connection
        elif self.body and (self.chunked or sum(map(len, self.body)) > BUFFERED_MAX):
            self._begin_stream()  # a body begun and not complete in one read

    def _begin_stream(self) -> None:
        """Hand the head over now, with this connection as its body's stream; reading waits
        for the consumer's sink."""
        length: int | None = None
        for name, value in self.headers:
            if name.lower() == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    pass
        self.streaming = True
        self.chunked = False
        self.complete = False
        self.error = None
        self.paused = False
        self.pending, self.body = self.body, []
        response = InstanceResponse(
            self.parser.get_status_code(),
            self.headers,
            b"",
            self.parser.should_keep_alive(),
            self,
            length,
        )
        if self.transport is not None:
            self.transport.pause_reading()
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(response)
            return
        on_outcome, self.on_outcome = self.on_outcome, None
        if on_outcome is not None:
            on_outcome(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._fail(InstanceGone("instance closed the connection"))
        if self.clock is not None:
            self.clock.idle_close()

    def _fail(self, exc: Exception) -> None:
        if self.streaming and not self.complete:
            self.error = self.error or exc
            if self.sink is not None:
                self._end_stream()
            return
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        on_outcome, self.on_outcome = self.on_outcome, None
        if on_outcome is not None:
            on_outcome(exc)

    # -- httptools callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_chunk_header(self) -> None:
        self.chunked = True

    def on_body(self, body: bytes) -> None:
        if not self.streaming:
            self.body.append(body)
        elif self.sink is not None:
            self.sink.body(body)
        else:
            self.pending.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive()
        if not keep_alive:
            self.closed = True
        if self.streaming:
            self.complete = True
            return
        waiter, self.waiter = self.waiter, None
        response = InstanceResponse(
            self.parser.get_status_code(), self.headers, b"".join(self.body), keep_alive
        )
        self.chunked = False
        if waiter is not None:
            self.body = []  # else data_received would take it for a body begun
            if not waiter.done():
                waiter.set_result(response)
        elif self.on_outcome is not None:
            self.response = response


class BodyReader:
    """A ``BodySink`` read from a coroutine: the body's pieces in order, with the stream paused
    while more than ``buffered`` bytes wait to be read."""

    def __init__(self, stream: BodyStream, buffered: int = 256 * 1024) -> None:
        self.stream = stream
        self.buffered = buffered
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.done = False
        self.error: Exception | None = None
        self.wakeup: asyncio.Future[None] | None = None
        self.paused = False
        stream.attach(self)

    def body(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size > self.buffered and not self.paused:
            self.paused = True
            self.stream.pause()
        self._wake()

    def end(self, error: Exception | None) -> None:
        self.done = True
        self.error = error
        self._wake()

    def _wake(self) -> None:
        wakeup, self.wakeup = self.wakeup, None
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def read(self) -> bytes:
        """The next piece, or b"" at the end; raises the stream's error (``InstanceGone``,
        ``ResponseTooLarge``) where the body broke off."""
        while not self.chunks:
            if self.done:
                if self.error is not None:
                    raise self.error
                return b""
            self.wakeup = asyncio.get_running_loop().create_future()
            await self.wakeup
        data = self.chunks.popleft()
        self.size -= len(data)
        if self.paused and self.size <= self.buffered // 2:
            self.paused = False
            self.stream.resume()
        return data

    def cancel(self) -> None:
        """Stop reading: the body's remainder is not wanted (a ``read`` waiting returns b"")."""
        if not self.done:
            self.done = True
            self.stream.cancel()
            self._wake()


async def read_body(stream: BodyStream, limit: int) -> bytes:
    """A streamed body, whole, for callers that need it so; ``ResponseTooLarge`` past
    ``limit`` bytes (the stream is then cancelled)."""
    parts: list[bytes] = []
    size = 0
    reader = BodyReader(stream)
    try:
        while data := await reader.read():
            size += len(data)
            if size > limit:
                raise ResponseTooLarge(limit)
            parts.append(data)
    finally:
        reader.cancel()
    return b"".join(parts)
