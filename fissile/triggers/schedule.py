"""Timer schedules: cron expressions (5 fields, or 6 with a leading seconds field, or a
``@hourly``-style nickname) and fixed intervals (``@every 30s``), read in a time zone.

Pure: no clock is read here; callers pass the instant to count from. Interval slots are aligned
on the Unix epoch, not on the trigger's creation, so the same slot has the same time across
restarts (what lets a restarted platform know a slot already fired).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from fissile._units import parse_duration

NICKNAMES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
MIN_INTERVAL = 1.0


class ScheduleError(ValueError):
    pass


class Schedule:
    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        self.expression = expression.strip()
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(f"unknown time zone {timezone!r}") from None
        self.interval: float | None = None
        self._seconds_field = False
        text = self.expression
        if text.startswith("@every"):
            amount = text[len("@every") :].strip()
            try:
                self.interval = parse_duration(amount)
            except ValueError:
                raise ScheduleError(
                    f"@every needs a duration such as 30s or 5m, not {amount!r}"
                ) from None
            if self.interval < MIN_INTERVAL:
                raise ScheduleError(f"@every must be at least {MIN_INTERVAL:g}s")
            return
        if text.startswith("@"):
            if text not in NICKNAMES:
                raise ScheduleError(f"unknown schedule {text!r}; use one of {', '.join(NICKNAMES)}")
        else:
            fields = text.split()
            if len(fields) not in (5, 6):
                raise ScheduleError(
                    f"a cron expression has 5 fields (minute hour day month weekday) or 6 with a"
                    f" leading seconds field; {text!r} has {len(fields)}"
                )
            self._seconds_field = len(fields) == 6
        try:
            self._iter(datetime.now(UTC)).get_next(datetime)
        except (CroniterBadCronError, CroniterBadDateError, ValueError, KeyError) as exc:
            raise ScheduleError(f"invalid cron expression {text!r}: {exc}") from None

    def _iter(self, start: datetime) -> croniter:
        return croniter(
            self.expression,
            start.astimezone(self.zone),
            second_at_beginning=self._seconds_field,
        )

    def next_after(self, instant: datetime) -> datetime:
        """The first slot strictly after ``instant`` (aware), in UTC."""
        if self.interval is not None:
            stamp = instant.timestamp()
            slot = (math.floor(stamp / self.interval) + 1) * self.interval
            return datetime.fromtimestamp(slot, UTC)
        found: datetime = self._iter(instant).get_next(datetime)
        return found.astimezone(UTC)

    def upcoming(self, start: datetime, count: int) -> list[datetime]:
        slots: list[datetime] = []
        instant = start
        for _ in range(count):
            instant = self.next_after(instant)
            slots.append(instant)
        return slots
