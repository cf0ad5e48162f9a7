"""Stopping with TLS connections open: a closing TLS connection waits for the client's
``close_notify`` (uvloop gives it 30 s), and an idle keep-alive client never sends one, so
``fissile up`` took 30 s to stop while a browser or a pooled HTTP client stayed connected.
During a stop, a TLS connection that is closing and has nothing left to write is aborted."""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

#: Seconds a closing TLS connection is given to finish before it is aborted (and the period
#: at which one still answering is looked at again).
GRACE = 1.0


def hurry_close(transport: asyncio.BaseTransport | None) -> None:
    if transport is None or transport.get_extra_info("sslcontext") is None:
        return
    # uvloop's TLS transport is no asyncio.Transport subclass, but has its methods.
    tls = cast(asyncio.Transport, transport)
    loop = asyncio.get_running_loop()

    def check() -> None:
        if tls.is_closing() and tls.get_write_buffer_size() == 0:
            with contextlib.suppress(Exception):  # already gone
                tls.abort()
        else:
            loop.call_later(GRACE, check)  # a response still going out: its close comes later

    loop.call_later(GRACE, check)
