"""fissile/executor/autoscaler.py on a fake clock: windows, panic, gradual scale-down, zero."""

from __future__ import annotations

import itertools

import pytest

from fissile.executor.autoscaler import (
    SCALE_DOWN_PERIOD,
    Autoscaler,
    Decision,
    target_for,
)

TICK = 0.5


class Clock:
    def __init__(self, scaler: Autoscaler, now: float) -> None:
        self.scaler = scaler
        self.now = now
        self.ready = 0

    def hold(self, demand: int, seconds: float, **limits: float) -> Decision:
        """Keep ``demand`` for ``seconds``, ticking every TICK; the ready count follows the
        decisions at once (as if instances started instantly). Returns the last decision."""
        self.scaler.observe(self.now, demand)
        decision = None
        end = self.now + seconds
        while self.now + TICK <= end + 1e-9:
            self.now += TICK
            decision = self.tick(**limits)
        assert decision is not None
        return decision

    def tick(
        self, min_scale: int = 0, max_scale: int = 100, idle_timeout: float = 120.0
    ) -> Decision:
        decision = self.scaler.decide(self.now, self.ready, min_scale, max_scale, idle_timeout)
        self.ready = decision.desired
        return decision


def clock(stable_window: float = 60.0, target: float = 1.0) -> Clock:
    return Clock(Autoscaler(1000.0, target=target, stable_window=stable_window), 1000.0)


def test_target_is_the_concurrency_with_headroom_above_one() -> None:
    assert target_for(1) == 1.0
    assert target_for(10) == pytest.approx(7.0)
    assert target_for(100) == pytest.approx(70.0)


def test_no_demand_wants_nothing() -> None:
    c = clock()
    decision = c.hold(0, 5.0, idle_timeout=1.0)
    assert (decision.desired, decision.panic) == (0, False)


def test_steady_demand_is_divided_by_the_target() -> None:
    c = clock(target=7.0)
    c.hold(20, 120.0)  # 20 in flight, 7 per instance: 3 instances
    assert c.tick().desired == 3
    assert c.scaler.panic_since is None


def test_the_average_weighs_demand_by_its_duration() -> None:
    c = clock(stable_window=10.0)
    c.hold(0, 10.0)
    c.ready = 1
    # 4 in flight for a quarter of each tick: an average of 1.
    for _ in range(20):
        c.scaler.observe(c.now, 4)
        c.scaler.observe(c.now + TICK / 4, 0)
        c.now += TICK
        decision = c.tick()
    assert decision.stable_average == pytest.approx(1.0)
    assert decision.desired == 1


def test_a_burst_panics_and_scales_at_once() -> None:
    c = clock()
    c.hold(1, 60.0)
    assert c.ready == 1
    decision = c.hold(10, TICK)
    # Half a second of 10 in flight barely moves the 60 s average, but the 6 s panic window
    # sees it: desired jumps.
    assert decision.panic
    assert decision.stable_average < 2
    assert decision.desired >= 2
    decision = c.hold(10, 6.0)
    assert decision.desired == 10


def test_no_scale_down_while_panicking() -> None:
    c = clock()
    c.hold(1, 60.0)
    c.hold(10, 6.0)
    assert c.ready == 10
    decision = c.hold(1, 30.0)  # the burst is over, but within a stable window of it
    assert decision.panic
    assert decision.desired == 10


def test_panic_ends_a_stable_window_after_the_last_burst() -> None:
    c = clock()
    c.hold(1, 60.0)
    c.hold(10, 6.0)
    last_burst = c.scaler.panic_since
    assert last_burst is not None
    decision = c.hold(1, 61.0)
    assert not decision.panic
    assert decision.desired < 10


def test_scale_down_is_gradual() -> None:
    c = clock(stable_window=6.0)
    c.hold(8, 12.0)
    assert c.ready == 8
    c.scaler.observe(c.now, 1)
    steps = []
    while c.ready > 1:
        c.now += TICK
        before = c.ready
        c.tick()
        if c.ready != before:
            steps.append((c.now, c.ready))
    counts = [8] + [ready for _, ready in steps]
    assert len(counts) >= 4
    # Never more than half at a time ...
    assert all(b >= a / 2 for a, b in itertools.pairwise(counts)), counts
    times = [at for at, _ in steps]
    assert all(b - a >= SCALE_DOWN_PERIOD for a, b in itertools.pairwise(times))


def test_one_instance_stays_until_the_idle_timeout_then_zero() -> None:
    c = clock(stable_window=6.0)
    c.hold(1, 10.0, idle_timeout=30.0)
    assert c.ready == 1
    decision = c.hold(0, 25.0, idle_timeout=30.0)
    assert decision.desired == 1
    decision = c.hold(0, 6.0, idle_timeout=30.0)
    assert decision.desired == 0


def test_min_and_max_scale_bound_the_decision() -> None:
    c = clock()
    assert c.hold(0, 200.0, min_scale=2, idle_timeout=1.0).desired == 2
    c = clock()
    assert c.hold(50, 60.0, max_scale=8).desired == 8


def test_demand_in_flight_counts_as_activity() -> None:
    c = clock(stable_window=1.0)
    c.hold(1, 5.0, idle_timeout=1.0)
    # One long request: the instance is busy, never idle, whatever the idle timeout.
    assert c.hold(1, 10.0, idle_timeout=1.0).desired == 1


def test_a_quiet_spell_skipped_by_rest_does_not_dilute_the_next_burst() -> None:
    c = clock()
    c.now += 100.0
    c.scaler.rest(c.now)  # the pool's cheap path while scaled to zero
    decision = c.hold(4, TICK)
    assert decision.stable_average == pytest.approx(4.0)
    assert decision.desired == 4
