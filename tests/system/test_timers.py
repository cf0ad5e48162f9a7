"""Timer triggers: firing times of a schedule with a seconds field, the request's headers,
`showschedule`, and no double fire (nor catch-up of missed runs) across a restart."""

from __future__ import annotations

import itertools
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest
from syskit import Platform, Spawn, assert_one_line_error, write
from trigkit import log_lines, wait_for_lines

# How late a run may start after its slot on a loaded 2-core machine.
TOLERANCE = 1.0

TICK = """
import time

def main(request):
    h = request.headers
    print("FIRED", h["x-fissile-timer-name"], h["x-fissile-timer-slot"], repr(time.time()),
          h["x-fissile-trigger"], request.method, flush=True)
    return "ok"
"""


def fires(data_dir: Path, function: str) -> list[tuple[str, float, float]]:
    """(timer, slot, started) of each run in the function's log."""
    return [
        (words[0], datetime.fromisoformat(words[1]).timestamp(), float(words[2]))
        for words in log_lines(data_dir, function, "FIRED ")
    ]


def test_seconds_field_fires_on_time(platform: Platform, tmp_path: Path) -> None:
    source = write(tmp_path / "tick.py", TICK)
    platform.ok("fn", "create", "--name", "timer-tick", "--code", str(source))
    platform.ok(
        "timer",
        "create",
        "--name",
        "every-2s",
        "--function",
        "timer-tick",
        "--cron",
        "*/2 * * * * *",
    )
    try:
        lines = wait_for_lines(platform.data_dir, "timer-tick", "FIRED ", 3, timeout=15)
    finally:
        platform.ok("timer", "delete", "--name", "every-2s")
    assert len(lines) >= 3, lines
    runs = fires(platform.data_dir, "timer-tick")
    slots = [slot for _, slot, _ in runs]
    assert all(slot % 2 == 0 for slot in slots), slots
    assert slots == sorted(set(slots)), "a slot fired twice"
    assert all(b - a == 2 for a, b in itertools.pairwise(slots)), slots
    for _, slot, started in runs:
        assert 0 <= started - slot < TOLERANCE, (slot, started)
    words = log_lines(platform.data_dir, "timer-tick", "FIRED ")[0]
    assert words[0] == "every-2s" and words[3:] == ["timer", "POST"]


def test_get_shows_last_and_next_fire(platform: Platform, tmp_path: Path) -> None:
    source = write(tmp_path / "tick.py", TICK)
    platform.ok("fn", "create", "--name", "timer-status", "--code", str(source))
    created = time.time()
    platform.ok(
        "timer",
        "create",
        "--name",
        "status-1s",
        "--function",
        "timer-status",
        "--cron",
        "* * * * * *",
        "--timezone",
        "Europe/Paris",
    )
    wait_for_lines(platform.data_dir, "timer-status", "FIRED ", 1, timeout=10)
    shown = platform.json_of("timer", "get", "--name", "status-1s")
    shown_at = time.time()
    platform.ok("timer", "delete", "--name", "status-1s")
    last = datetime.fromisoformat(shown["status"]["last_fired"]).timestamp()
    following = datetime.fromisoformat(shown["status"]["next_fire"]).timestamp()
    assert following - last == 1
    # A fire of this timer: after it was made (fires are on whole seconds), before it was
    # shown. No deadline: on a loaded machine the CLI calls alone took over 5 s.
    assert int(created) <= last <= shown_at
    assert shown["timezone"] == "Europe/Paris"


def test_showschedule(platform: Platform) -> None:
    out = platform.ok(
        "timer",
        "showschedule",
        "--cron",
        "*/20 * * * * *",
        "--from",
        "2026-01-01T00:00:05",
        "--count",
        "3",
    ).out
    assert out.splitlines() == [
        "2026-01-01T00:00:20+00:00",
        "2026-01-01T00:00:40+00:00",
        "2026-01-01T00:01:00+00:00",
    ]
    paris = platform.ok(
        "timer",
        "showschedule",
        "--cron",
        "0 9 * * 1",
        "--timezone",
        "Europe/Paris",
        "--from",
        "2026-01-01",
        "--count",
        "2",
    ).out
    assert paris.splitlines() == ["2026-01-05T09:00:00+01:00", "2026-01-12T09:00:00+01:00"]
    every = platform.ok(
        "timer", "showschedule", "--cron", "@every 90s", "--from", "2026-01-01", "--count", "2"
    ).out
    assert every.splitlines() == ["2026-01-01T00:01:30+00:00", "2026-01-01T00:03:00+00:00"]
    hourly = platform.ok(
        "tt", "showschedule", "--cron", "@hourly", "--from", "2026-01-01T10:30:00", "--count", "1"
    ).out
    assert hourly.strip() == "2026-01-01T11:00:00+00:00"


def test_bad_schedules_are_refused(platform: Platform, tmp_path: Path) -> None:
    result = platform.cli("timer", "showschedule", "--cron", "* * *")
    assert result.rc == 2 and "6 with a leading seconds field" in result.err, result
    source = write(tmp_path / "tick.py", TICK)
    platform.ok("fn", "create", "--name", "timer-bad", "--code", str(source))
    for cron, needle in (
        ("61 * * * *", "invalid cron expression"),
        ("@every 0.2s", "at least 1s"),
        ("@sometimes", "unknown schedule"),
    ):
        refused = platform.cli(
            "timer", "create", "--name", "bad", "--function", "timer-bad", "--cron", cron
        )
        assert_one_line_error(refused, needle)
    zone = platform.cli(
        "timer",
        "create",
        "--name",
        "bad",
        "--function",
        "timer-bad",
        "--cron",
        "@daily",
        "--timezone",
        "Mars/Olympus",
    )
    assert_one_line_error(zone, "unknown time zone")


@pytest.mark.slow  # a dedicated platform started twice: about 15 s
def test_no_double_fire_and_no_catch_up_across_a_kill(spawn: Spawn, tmp_path: Path) -> None:
    first = spawn()
    data_dir = first.data_dir
    source = write(tmp_path / "tick.py", TICK)
    first.ok("fn", "create", "--name", "tick", "--code", str(source))
    first.ok(
        "timer", "create", "--name", "each-second", "--function", "tick", "--cron", "* * * * * *"
    )
    wait_for_lines(data_dir, "tick", "FIRED ", 3, timeout=15)
    first.stop(signal.SIGKILL)
    killed_at = time.time()
    before = fires(data_dir, "tick")

    time.sleep(2.5)  # slots pass while the platform is down
    second = spawn(data_dir)
    restarted_at = time.time()
    count = len(before)
    wait_for_lines(data_dir, "tick", "FIRED ", count + 3, timeout=15)
    second.ok("timer", "delete", "--name", "each-second")
    after = fires(data_dir, "tick")[count:]

    slots = [slot for _, slot, _ in before + after]
    assert len(slots) == len(set(slots)), f"a slot fired twice: {slots}"
    assert after, "the timer did not resume"
    missed = [s for s in slots if killed_at + 0.5 < s < restarted_at - 1.0]
    assert not missed, f"runs missed while down were caught up: {missed}"
    for _, slot, started in after:
        assert 0 <= started - slot < TOLERANCE, (slot, started)
    second.stop_cleanly()
