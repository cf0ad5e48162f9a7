"""uvicorn's httptools protocol held to the router's limits on heads and time, for the listeners
that are not the router: the control API and the platform socket. uvicorn's own has no bound on
header bytes or count and no deadline for a head, so one slow or endless client held an fd (and
memory) for ever; here a function on the host network or a client of an exposed control API
gets 431 or 408 as at the router, and a listener's connections are capped so that it cannot
take the fds the router and the instances need. Not the hot path: a timer per head is fine.
"""

from __future__ import annotations

import asyncio
import json
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from fissile.router.limits import Limits
from fissile.router.tls import hurry_close


def bounded_protocol(limits: Limits, *extra: type[HttpToolsProtocol]) -> type[asyncio.Protocol]:
    """The protocol class to give ``uvicorn.Config(http=...)`` for a listener with ``limits``
    (``max_connections``: its own cap); ``extra``: other subclasses of uvicorn's protocol whose
    behaviour the listener needs too (they come first in the MRO and call ``super()``)."""
    bases = (*extra, BoundedHttpToolsProtocol)
    return type("BoundedHttpToolsProtocol", bases, {"limits": limits})


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[Limits] = Limits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.refused = False
        self.in_head = False
        self.head_size = 0
        self.head_spill = 0
        self.chunk_size = 0
        self.head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        limit = self.limits.max_connections
        if limit is not None and len(self.connections) > limit:
            # Full: closed at once, without reading (the listener's fd is back at once).
            self.refused = True
            transport.close()
            return
        self._arm()  # the first request's head is due within the header timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        super().shutdown()
        hurry_close(self.transport)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self.chunk_size = len(data)
        super().data_received(data)
        if self.in_head and not self.refused:
            # httptools keeps a header still arriving to itself: count the packets.
            self.head_spill += len(data)
            if self.head_spill > self.limits.max_header_bytes:
                self._refuse_head(too_many=False)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head = True
        self.head_size = 0
        self.head_spill = -self.chunk_size  # where in this packet it began is unknown
        if self.head_timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        if self.refused:
            return
        super().on_url(url)
        self.head_size += len(url)
        if self.head_size > self.limits.max_header_bytes:
            self._refuse_head(too_many=False)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.refused:
            return
        super().on_header(name, value)
        self.head_size += len(name) + len(value) + 4
        too_large = self.head_size > self.limits.max_header_bytes
        if too_large or len(self.headers) > self.limits.max_headers:
            self._refuse_head(too_many=not too_large)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._disarm()
        if not self.refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.refused:
            super().on_message_complete()

    # -- refusals -----------------------------------------------------------------------

    def _arm(self) -> None:
        self.head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def _disarm(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timeout(self) -> None:
        self.head_timer = None
        timeout = self.limits.header_timeout
        self._refuse(408, "header_timeout", f"request head not received within {timeout:g}s")

    def _refuse_head(self, too_many: bool) -> None:
        if too_many:
            message = f"more than {self.limits.max_headers} request headers"
            self._refuse(431, "too_many_headers", message)
        else:
            message = f"request target and headers exceed {self.limits.max_header_bytes} bytes"
            self._refuse(431, "headers_too_large", message)

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer and close, unless a response is being written (then just close: it cannot
        be overtaken, and these listeners' clients do not pipeline)."""
        self.refused = True
        self._disarm()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            body = json.dumps({"error": {"code": code, "message": message}}).encode()
            self.transport.write(
                b"".join(
                    [
                        STATUS_LINE[status],
                        b"content-type: application/json\r\n",
                        b"content-length: %d\r\n" % len(body),
                        b"connection: close\r\n\r\n",
                        body,
                    ]
                )
            )
        self.transport.close()
