"""The long task: counts the primes below ``limit`` and takes its time doing it.

The sleep stands for the slow part of real work (a report, a model, a remote API): long
enough that a browser should not sit on an open HTTP request waiting for it.
"""

import math
import time

DEFAULT_LIMIT = 200_000
MAX_LIMIT = 2_000_000
DEFAULT_SECONDS = 1.5


def count_primes(limit: int) -> int:
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\0\0"
    for n in range(2, math.isqrt(limit - 1) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytes(len(range(n * n, limit, n)))
    return sum(sieve)


def main(request):
    options = request.json() or {}
    try:
        limit = int(options.get("limit", DEFAULT_LIMIT))
        seconds = float(options.get("seconds", DEFAULT_SECONDS))
    except (TypeError, ValueError):
        return {"error": "limit must be an integer and seconds a number"}, 400
    if not 2 <= limit <= MAX_LIMIT or not 0 <= seconds <= 10:
        return {"error": f"limit must be within 2..{MAX_LIMIT} and seconds within 0..10"}, 400
    began = time.monotonic()
    primes = count_primes(limit)
    time.sleep(max(0.0, seconds - (time.monotonic() - began)))
    return {
        "limit": limit,
        "primes": primes,
        "seconds": round(time.monotonic() - began, 3),
    }
