"""Request rate limits of routes and API keys: a token bucket each, refilled from the clock
when a request asks (no timer), answered 429 with ``Retry-After`` when empty.

In a cluster each router keeps its buckets and also pays, with ``debit``, for what the other
routers' buckets of the same limit let through (``fissile/cluster/ratelimits.py``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol


class TokenBucket:
    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "rate")

    def __init__(
        self, rate: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate  # tokens per second
        # At least one request must fit, or a rate under 1/s would refuse everything.
        self.burst = float(burst if burst is not None else max(1, math.ceil(rate)))
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    def take(self) -> float:
        """0.0 when a request may go now (and pays for it); otherwise the seconds until one
        may."""
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return 0.0
        self._tokens = tokens
        return (1.0 - tokens) / self.rate

    def debit(self, tokens: float, floor: float) -> None:
        """Take ``tokens`` that requests elsewhere used, down to ``floor`` (at most 0; a bucket
        already below it stays where it is): below zero, the next requests here wait until the
        debt is refilled."""
        now = self._clock()
        current = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens = max(min(floor, 0.0, current), current - tokens)


class Buckets(Protocol):
    """How a router makes a limit's bucket; ``key`` names the limit (``route/<name>``,
    ``apikey/<name>``) for routers that share their counts."""

    def __call__(self, key: str, rate: float, burst: int | None) -> TokenBucket: ...


def local_bucket(key: str, rate: float, burst: int | None) -> TokenBucket:
    """A bucket of this router's alone (one node)."""
    return TokenBucket(rate, burst)


def retry_after(wait: float) -> bytes:
    """``Retry-After`` is whole seconds: rounded up, so a client that obeys it gets in."""
    return str(max(1, math.ceil(wait))).encode()
