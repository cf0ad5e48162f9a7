import math

from fissile.observability.metrics import (
    DURATION_BUCKETS,
    FunctionMetrics,
    Histogram,
    Metrics,
    crash_reason,
)


def test_histogram_puts_each_value_in_the_first_bucket_it_fits() -> None:
    histogram = Histogram()
    for seconds in (0.0001, 0.0005, 0.0006, 2.0, 1000.0):
        histogram.observe(seconds)
    cumulative = dict(histogram.cumulative())
    assert cumulative[0.0005] == 2  # le is inclusive
    assert cumulative[0.001] == 3
    assert cumulative[2.5] == 4
    assert cumulative[DURATION_BUCKETS[-1]] == 4
    assert cumulative[math.inf] == 5
    assert histogram.count == 5
    assert math.isclose(histogram.sum, 1002.0012)


def test_a_copy_does_not_move_with_the_original() -> None:
    histogram = Histogram()
    histogram.observe(0.01)
    copy = histogram.copy()
    histogram.observe(0.01)
    assert copy.count == 1 and histogram.count == 2
    assert sum(copy.counts) == 1


def test_function_metrics_count_requests_by_status_and_errors() -> None:
    metrics = FunctionMetrics("hello")
    for status in (200, 200, 404, 500, 503):
        metrics.request(status, 0.002)
    assert metrics.requests == {200: 2, 404: 1, 500: 1, 503: 1}
    assert metrics.total == 5
    assert metrics.errors == 2
    assert metrics.duration.count == 5


def test_metrics_keep_one_entry_per_function_until_forgotten() -> None:
    metrics = Metrics()
    first = metrics.function("a")
    first.request(200, 0.001)
    assert metrics.function("a") is first
    metrics.forget("a")
    assert metrics.function("a").total == 0


def test_crash_reasons_are_few_label_values() -> None:
    assert crash_reason("out of memory (limit 64Mi)") == "oom"
    assert crash_reason("killed by signal 11 (SIGSEGV)") == "signal"
    assert crash_reason("exited with status 3") == "exited"
    assert crash_reason(None) == "exited"
    assert crash_reason("its python zygote went away") == "other"
