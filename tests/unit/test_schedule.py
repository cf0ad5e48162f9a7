"""Timer schedules: cron fields with and without seconds, nicknames, intervals, time zones,
refusals, and the choice of the next slot after a restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fissile.triggers.schedule import Schedule, ScheduleError
from fissile.triggers.timer import next_slot

T0 = datetime(2026, 3, 28, 23, 59, 58, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_five_fields_fire_on_minutes() -> None:
    assert Schedule("*/15 * * * *").upcoming(T0, 2) == [
        at("2026-03-29T00:00:00+00:00"),
        at("2026-03-29T00:15:00+00:00"),
    ]


def test_a_leading_seconds_field() -> None:
    assert Schedule("*/20 * * * * *").upcoming(T0, 3) == [
        at("2026-03-29T00:00:00+00:00"),
        at("2026-03-29T00:00:20+00:00"),
        at("2026-03-29T00:00:40+00:00"),
    ]
    # The seconds field leads: "30 0 * * * *" is second 30 of minute 0 of every hour.
    assert Schedule("30 0 * * * *").next_after(T0) == at("2026-03-29T00:00:30+00:00")


def test_nicknames_and_intervals() -> None:
    assert Schedule("@hourly").next_after(T0) == at("2026-03-29T00:00:00+00:00")
    assert Schedule("@daily").next_after(T0) == at("2026-03-29T00:00:00+00:00")
    # Intervals are aligned on the epoch, so a slot is the same after a restart.
    every = Schedule("@every 90s")
    assert every.next_after(T0) == at("2026-03-29T00:00:00+00:00")
    assert every.next_after(at("2026-03-29T00:00:00+00:00")) == at("2026-03-29T00:01:30+00:00")


def test_time_zones_follow_daylight_saving() -> None:
    paris = Schedule("0 9 * * *", "Europe/Paris")
    # Paris moves from UTC+1 to UTC+2 on 2026-03-29.
    assert paris.upcoming(T0, 2) == [
        at("2026-03-29T07:00:00+00:00"),
        at("2026-03-30T07:00:00+00:00"),
    ]
    assert paris.next_after(T0 - timedelta(days=1)) == at("2026-03-28T08:00:00+00:00")


@pytest.mark.parametrize(
    ("expression", "zone", "message"),
    [
        ("* * *", "UTC", "has 3"),
        ("* * * * * * *", "UTC", "has 7"),
        ("99 * * * *", "UTC", "invalid cron expression"),
        ("@often", "UTC", "unknown schedule"),
        ("@every soon", "UTC", "needs a duration"),
        ("@every 0.5s", "UTC", "at least 1s"),
        ("@daily", "Nowhere/Land", "unknown time zone"),
    ],
)
def test_refusals(expression: str, zone: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        Schedule(expression, zone)


def test_next_slot_skips_missed_runs_and_never_repeats_one() -> None:
    every_second = Schedule("* * * * * *")
    down_since = at("2026-01-01T00:00:00+00:00")
    back = at("2026-01-01T00:00:10.500000+00:00")
    # Down for ten slots: the next one is after now, not the first missed.
    assert next_slot(every_second, back, down_since) == at("2026-01-01T00:00:11+00:00")
    # The clock went back below the last slot fired: that slot does not come again.
    fired = at("2026-01-01T00:00:05+00:00")
    assert next_slot(every_second, at("2026-01-01T00:00:03+00:00"), fired) == at(
        "2026-01-01T00:00:06+00:00"
    )
    assert next_slot(every_second, back, None) == at("2026-01-01T00:00:11+00:00")
