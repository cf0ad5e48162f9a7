import math

import pytest

from fissile.observability.metrics import DURATION_BUCKETS, Histogram, Metrics
from fissile.observability.stats import (
    FINE_SPAN,
    BadSince,
    Stats,
    format_since,
    parse_since,
    quantile,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(interval: float = 5.0) -> tuple[Metrics, Stats, Clock]:
    metrics = Metrics()
    clock = Clock()
    return metrics, Stats(metrics, interval=interval, clock=clock), clock


# -- the window's `since` ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("10m", 600.0), ("1h", 3600.0), ("1.5m", 90.0), (" 2M ", 120.0)],
)
def test_since_accepts_a_number_and_a_unit(text: str, seconds: float) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "m", "10x", "-5s", "1h30m", "1e3s", "ten minutes"])
def test_since_refuses_anything_else_naming_the_accepted_forms(text: str) -> None:
    with pytest.raises(BadSince, match="30s, 10m or 1h"):
        parse_since(text)


@pytest.mark.parametrize("text", ["0s", "61m", "2h"])
def test_since_refuses_empty_windows_and_windows_beyond_the_ring(text: str) -> None:
    with pytest.raises(BadSince, match="at most 1h"):
        parse_since(text)


def test_since_formats_back_to_its_shortest_form() -> None:
    assert [format_since(s) for s in (30, 60, 90, 600, 3600, 2.5)] == [
        "30s",
        "1m",
        "90s",
        "10m",
        "1h",
        "2.5s",
    ]


# -- quantiles --------------------------------------------------------------------------------


def histogram_of(*seconds: float) -> list[int]:
    histogram = Histogram()
    for value in seconds:
        histogram.observe(value)
    return histogram.counts


def test_quantile_of_nothing_is_none() -> None:
    assert quantile(0.5, DURATION_BUCKETS, histogram_of()) is None


def test_quantile_interpolates_within_its_bucket_as_prometheus_does() -> None:
    # Ten observations in (0.01, 0.025]: the median is halfway through that bucket.
    counts = histogram_of(*[0.02] * 10)
    assert math.isclose(quantile(0.5, DURATION_BUCKETS, counts) or 0, 0.0175)
    assert math.isclose(quantile(1.0, DURATION_BUCKETS, counts) or 0, 0.025)
    # The first bucket starts at 0.
    assert math.isclose(quantile(0.5, DURATION_BUCKETS, histogram_of(0.0001)) or 0, 0.00025)


def test_quantile_picks_the_bucket_holding_its_rank() -> None:
    counts = histogram_of(*[0.002] * 98, 0.4, 0.4)
    p50 = quantile(0.5, DURATION_BUCKETS, counts) or 0
    p99 = quantile(0.99, DURATION_BUCKETS, counts) or 0
    assert 0.001 < p50 <= 0.0025
    assert 0.25 < p99 <= 0.5
    # 99 of 100 is the first observation of the (0.25, 0.5] bucket's two: its middle.
    assert math.isclose(p99, 0.375)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    counts = histogram_of(1000.0, 2000.0)
    assert quantile(0.99, DURATION_BUCKETS, counts) == DURATION_BUCKETS[-1]


# -- windows ----------------------------------------------------------------------------------


def test_a_window_is_the_difference_from_the_snapshot_at_its_start() -> None:
    metrics, stats, clock = make()
    hello = metrics.function("hello")
    for _ in range(10):
        hello.request(200, 0.002)
    for _ in range(13):  # t=1000..1060: 10 requests, unchanged
        stats.sample()
        clock.now += 5
    for _ in range(4):
        hello.request(200, 0.2)
    hello.request(500, 0.2)
    hello.cold_starts += 1
    hello.crashed("exited with status 1")
    window = stats.window("hello", 30).to_json(30)
    assert window["requests"] == 5
    assert window["statuses"] == {"200": 4, "500": 1}
    assert window["errors"] == 1 and window["error_rate"] == 0.2
    assert window["window"] == 30 and window["rate"] == round(5 / 30, 3)
    assert 100 < window["p50_ms"] <= 250 and 100 < window["p99_ms"] <= 250
    assert window["cold_starts"] == 1 and window["crashes"] == 1


def test_a_window_starts_where_the_counts_were_last_known() -> None:
    metrics, stats, clock = make()
    hello = metrics.function("hello")
    stats.sample()  # t=1000: nothing
    clock.now += 60  # no sampling since: the requests may have come any time after t=1000
    for _ in range(6):
        hello.request(200, 0.002)
    window = stats.window("hello", 30)
    # Counted from t=1000, the last time the counts were known, not from 30 s ago.
    assert window.total == 6 and window.seconds == 60 and window.rate == 0.1


def test_an_idle_function_keeps_one_snapshot_and_a_busy_one_one_per_interval() -> None:
    metrics, stats, clock = make()
    idle, busy = metrics.function("idle"), metrics.function("busy")
    idle.request(200, 0.001)
    for _ in range(100):
        busy.request(200, 0.001)
        stats.sample()
        clock.now += 5
    assert len(stats.rings["idle"]) == 1
    assert len(stats.rings["busy"]) == 100


def test_older_snapshots_thin_to_one_a_minute_back_to_the_horizon() -> None:
    metrics, stats, clock = make()
    hello = metrics.function("hello")
    for _ in range(1000):  # 5000 s, a request every 5 s
        hello.request(200, 0.001)
        stats.sample()
        clock.now += 5
    ring = stats.rings["hello"]
    assert len(ring.fine) <= FINE_SPAN / 5 + 1
    assert len(ring.coarse) <= (3600 - FINE_SPAN) / 60 + 2
    assert ring.coarse[0].time <= clock.now - 3600 < ring.coarse[1].time
    # Within the fine span, windows start on time; beyond it, up to a minute early. (The last
    # request came with the last sampling, 5 s ago; the one at the start is not in.)
    ten = stats.window("hello", 600)
    assert ten.seconds == 600 and ten.total == 600 / 5 - 1
    hour = stats.window("hello", 3600)
    assert 3600 <= hour.seconds < 3660 and hour.total == hour.seconds / 5 - 1


def test_a_window_longer_than_the_function_s_life_covers_its_life() -> None:
    metrics, stats, clock = make()
    stats.sample()
    clock.now += 10
    hello = metrics.function("hello")
    stats.sample()  # first seen with no requests: made at most now
    clock.now += 20
    for _ in range(6):
        hello.request(200, 0.001)
    window = stats.window("hello", 600)
    assert window.total == 6
    assert window.seconds == 20 and window.rate == 0.3


def test_a_function_made_again_starts_from_zero() -> None:
    metrics, stats, clock = make()
    for _ in range(50):
        metrics.function("hello").request(200, 0.001)
    stats.sample()
    clock.now += 5
    metrics.forget("hello")
    metrics.function("hello").request(503, 0.001)
    window = stats.window("hello", 60)
    assert window.requests == {503: 1}


def test_asking_about_a_function_does_not_register_it() -> None:
    metrics, stats, _ = make()
    assert stats.window("ghost", 60).total == 0
    assert "ghost" not in metrics.functions


def test_series_give_rate_and_p99_per_sampling_interval_oldest_first() -> None:
    metrics, stats, clock = make(interval=5)
    hello = metrics.function("hello")
    stats.sample()
    for step in range(12):
        clock.now += 5
        for _ in range(step):
            hello.request(200, 0.02)
        stats.sample()
    clock.now += 2.5
    hello.request(200, 0.4)  # after the last sampling: in the next interval, not yet shown
    series = stats.series("hello")
    assert series["interval"] == 5
    assert len(series["rate"]) == len(series["p99_ms"]) == 300 / 5
    # Padded before the function was first seen; then step k's k requests in 5 s.
    assert series["rate"] == [0.0] * 48 + [round(k / 5, 3) for k in range(12)]
    assert series["p99_ms"][:49] == [None] * 49
    assert all(10 < p <= 25 for p in series["p99_ms"][49:])


def test_series_keep_the_last_five_minutes() -> None:
    metrics, stats, clock = make(interval=5)
    hello = metrics.function("hello")
    stats.sample()
    for _ in range(100):
        clock.now += 5
        hello.request(500, 2.0)
        stats.sample()
    series = stats.series("hello")
    assert series["rate"] == [0.2] * 60
    assert all(1000 < p <= 2500 for p in series["p99_ms"])


def test_a_function_s_answer_carries_its_gauges() -> None:
    metrics = Metrics()
    metrics.function("hello").request(200, 0.001)
    stats = Stats(metrics, gauges=lambda name: {"queued": 3, "instances": {"ready": 1}})
    [answer] = stats.all(60, series=True)
    assert answer["function"] == "hello" and answer["queued"] == 3
    assert answer["requests"] == 1 and "series" in answer
