"""What a canary's step counts: the growth of every node's counters since the last step,
never negative when a node restarts or its counters start again, nothing of what a node had
counted before the step, and the whole count of a node that began after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fissile.controlplane.canaries import Count, LocalCounts, Tally, interval
from fissile.observability.metrics import Metrics

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_single_node_counts_the_growth_of_its_counters() -> None:
    metrics = Metrics()
    counts = LocalCounts(metrics)
    for status in (200, 200, 503):
        metrics.function("new").request(status, 0.001)
    before = counts.tally("new")
    for status in (200, 500, 502, 404):
        metrics.function("new").request(status, 0.001)
    requests, errors, kept = interval(before, counts.tally("new"))
    assert (requests, errors) == (4, 2)
    assert interval(kept, counts.tally("new"))[:2] == (0, 0)


def test_the_cluster_sums_every_nodes_growth() -> None:
    before = Tally({"n1": Count(10, 1, at(0)), "n2": Count(5, 0, at(0))}, at(1))
    after = Tally({"n1": Count(30, 4, at(0)), "n2": Count(8, 2, at(0))}, at(3))
    requests, errors, kept = interval(before, after)
    assert (requests, errors) == (23, 5)
    assert kept == after


def test_a_restarted_node_is_counted_from_its_restart_never_negatively() -> None:
    before = Tally({"n1": Count(100, 10, at(0)), "n2": Count(50, 0, at(0))}, at(1))
    # n2 restarted at 2 s: its counters began again, lower than before.
    after = Tally({"n1": Count(110, 10, at(0)), "n2": Count(7, 3, at(2))}, at(3))
    assert interval(before, after)[:2] == (17, 3)


def test_counters_that_went_down_under_the_same_since_count_whole() -> None:
    # A function's series forgotten and counted again: lower counts, same start.
    before = Tally({"n1": Count(100, 10, at(0))}, at(1))
    after = Tally({"n1": Count(4, 1, at(0))}, at(3))
    assert interval(before, after)[:2] == (4, 1)


def test_a_node_that_began_counting_after_the_last_step_counts_whole() -> None:
    before = Tally({"n1": Count(10, 0, at(0))}, at(1))
    after = Tally({"n1": Count(12, 0, at(0)), "n3": Count(6, 6, at(1.5))}, at(3))
    assert interval(before, after)[:2] == (8, 6)


def test_a_node_counting_before_the_last_step_but_unseen_then_counts_from_now() -> None:
    # n3's row was not read at the last step (written a moment later): what it holds may be
    # older than the interval, so it is the baseline, not a count.
    before = Tally({"n1": Count(10, 0, at(0))}, at(1))
    after = Tally({"n1": Count(12, 0, at(0)), "n3": Count(6, 6, at(0.5))}, at(3))
    requests, errors, kept = interval(before, after)
    assert (requests, errors) == (2, 0)
    later = Tally({"n1": Count(12, 0, at(0)), "n3": Count(9, 7, at(0.5))}, at(5))
    assert interval(kept, later)[:2] == (3, 1)


def test_a_dead_node_adds_nothing_and_keeps_its_baseline() -> None:
    before = Tally({"n1": Count(10, 0, at(0)), "n2": Count(20, 2, at(0))}, at(1))
    gone = Tally({"n1": Count(15, 0, at(0))}, at(3))
    requests, errors, kept = interval(before, gone)
    assert (requests, errors) == (5, 0)
    assert kept.counts["n2"] == Count(20, 2, at(0))
    # Back under the same counting (a partition healed): only its growth counts.
    back = Tally({"n1": Count(15, 0, at(0)), "n2": Count(24, 3, at(0))}, at(5))
    assert interval(kept, back)[:2] == (4, 1)


def test_no_baseline_counts_everything() -> None:
    after = Tally({"n1": Count(3, 1, at(0))}, at(3))
    assert interval(None, after)[:2] == (3, 1)
    # An empty first read (no row yet) still dates the baseline.
    empty = Tally({}, at(1))
    assert interval(empty, Tally({"n1": Count(3, 1, at(0))}, at(3)))[:2] == (0, 0)
