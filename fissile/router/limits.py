"""What the router lets one client hold: header bytes and count, time to send a request's head,
open connections; and the one timer that times connections out.

Timeouts are checked by a periodic sweep of the open connections, not by a timer per request:
on the hot path a request only writes a timestamp or two (``loop.call_later`` and ``cancel``
per request cost more than the whole check does per connection and sweep).
"""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass
from typing import Protocol

DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_HEADERS = 100
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_KEEP_ALIVE_TIMEOUT = 5.0
# The most connections the default allows, whatever the fd limit: an idle connection costs
# the router a few KiB, a head being read up to --max-header-bytes more.
MAX_DEFAULT_CONNECTIONS = 65536
# A sweep every quarter of the shortest timeout: a connection is timed out at most 25 % late.
_SWEEPS_PER_TIMEOUT = 4
_MIN_SWEEP, _MAX_SWEEP = 0.05, 1.0


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES  # request line target + header lines
    max_headers: int = DEFAULT_MAX_HEADERS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT  # from connect or request start to its head
    max_connections: int | None = None  # None: no limit (a router in a test)


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; returns the new soft limit
    (every open client connection holds an fd, and so does each instance connection)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft if soft != resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft
    return hard


def default_max_connections(nofile: int) -> int:
    """Client connections the router accepts with ``nofile`` fds: the rest is headroom for the
    control API, instances' sockets and output pipes, zygotes, the store and the logs (a
    quarter of the fds, at least 1024 when there are 2048 or more)."""
    headroom = max(nofile // 4, min(1024, nofile // 2))
    return max(1, min(nofile - headroom, MAX_DEFAULT_CONNECTIONS))


class Expiring(Protocol):
    def expire(self, now: float) -> None:
        """Close the connection if it has waited on its client too long."""


class Connections:
    """The router's open client connections, counted against ``max_connections``, and the
    sweep that times them out (runs only while some are open)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.open: set[Expiring] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._interval = _MAX_SWEEP

    def add(self, connection: Expiring, loop: asyncio.AbstractEventLoop, keep_alive: float) -> bool:
        """Count a new connection in; False when the router is full."""
        limit = self.limits.max_connections
        if limit is not None and len(self.open) >= limit:
            return False
        self.open.add(connection)
        if self._timer is None:
            shortest = min(self.limits.header_timeout, keep_alive)
            self._interval = min(max(shortest / _SWEEPS_PER_TIMEOUT, _MIN_SWEEP), _MAX_SWEEP)
            self._timer = loop.call_later(self._interval, self._sweep, loop)
        return True

    def discard(self, connection: Expiring) -> None:
        self.open.discard(connection)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for connection in list(self.open):
            connection.expire(now)
        self._timer = loop.call_later(self._interval, self._sweep, loop) if self.open else None
