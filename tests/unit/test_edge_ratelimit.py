"""The token bucket of route and key rate limits, on a fake clock."""

from __future__ import annotations

import pytest

from fissile.models import parse_rate
from fissile.router.ratelimit import TokenBucket, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(2.0, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take() == 0.0
    assert bucket.take() > 0
    clock.now += 100  # refills to the burst, not past it
    assert [bucket.take() == 0.0 for _ in range(4)] == [True, True, True, False]


def test_a_slow_rate_still_lets_one_request_in() -> None:
    bucket = TokenBucket(parse_rate("1/m"), clock=Clock())
    assert bucket.take() == 0.0
    wait = bucket.take()
    assert wait == pytest.approx(60.0)
    assert retry_after(wait) == b"60"
    assert retry_after(0.01) == b"1"


@pytest.mark.parametrize(
    ("text", "per_second"), [("100/s", 100.0), ("600/m", 10.0), ("1.5 / h", 1.5 / 3600)]
)
def test_rates(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["100", "0/s", "10/d", "fast", "-1/s"])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueError, match="invalid rate"):
        parse_rate(text)
