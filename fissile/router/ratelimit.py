"""Request rate limits of routes and API keys: a token bucket each, refilled from the clock
when a request asks (no timer), answered 429 with ``Retry-After`` when empty."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


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


def retry_after(wait: float) -> bytes:
    """``Retry-After`` is whole seconds: rounded up, so a client that obeys it gets in."""
    return str(max(1, math.ceil(wait))).encode()
