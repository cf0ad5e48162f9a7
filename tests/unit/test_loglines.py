"""fissile/observability/loglines.py: the log file's line format, and the filters of
``fn logs``."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from fissile.observability.loglines import (
    LogFilter,
    LogLine,
    LogView,
    body,
    level_rank,
    parse,
    parse_since,
    split_lines,
    stamp,
)

T0 = "2026-01-02T03:04:05.000Z"


def test_a_line_round_trips() -> None:
    line = f"{T0} {body('a1b2', 'WARNING', 'inv-7', 'disk [almost] full')}"
    assert line == f"{T0} a1b2 WARNING [inv-7] disk [almost] full"
    assert parse(line) == LogLine(T0, "a1b2", "WARNING", "inv-7", "disk [almost] full")
    assert parse(f"{T0} {body('a1b2', 'STDOUT', None, '')}") == LogLine(
        T0, "a1b2", "STDOUT", None, ""
    )


def test_platform_lines_say_so_in_json() -> None:
    parsed = parse(f"{T0} fissile ERROR [-] instance a1 died: killed by signal 9 (SIGKILL)")
    assert parsed.platform
    assert parsed.to_json() == {
        "time": T0,
        "instance": None,
        "level": "ERROR",
        "invocation_id": None,
        "message": "instance a1 died: killed by signal 9 (SIGKILL)",
        "source": "platform",
    }
    assert parse(f"{T0} a1 INFO [x] hi").to_json()["source"] == "function"


def test_lines_of_the_old_format_still_parse() -> None:
    assert parse(f"{T0} a1 hello world") == LogLine(T0, "a1", "OUTPUT", None, "hello world")
    assert parse(f"{T0} fissile instance a1 ready") == LogLine(
        T0, "fissile", "INFO", None, "instance a1 ready"
    )
    # A level word without its invocation field is text.
    assert parse(f"{T0} a1 INFO done").level == "OUTPUT"


def test_level_ranks() -> None:
    assert level_rank("warning") == level_rank("WARN") == level_rank(" Warning ") == 30
    assert level_rank("debug") < level_rank("info") < level_rank("error") < level_rank("critical")
    with pytest.raises(ValueError, match="unknown level"):
        level_rank("loud")


def test_since_takes_durations_and_iso_times() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_since("10m", now) == "2026-01-02T02:54:05.000Z"
    assert parse_since("1h30m", now) == "2026-01-02T01:34:05.000Z"
    assert parse_since("1.5s", now) == "2026-01-02T03:04:03.500Z"
    assert parse_since("2d", now) == "2025-12-31T03:04:05.000Z"
    assert parse_since("2026-01-02T03:00:00", now) == "2026-01-02T03:00:00.000Z"
    assert parse_since("2026-01-02T05:00:00+02:00", now) == "2026-01-02T03:00:00.000Z"
    assert parse_since("2026-01-02T03:00:00Z", now) == "2026-01-02T03:00:00.000Z"
    for bad in ("10x", "yesterday", "m10", ""):
        with pytest.raises(ValueError, match="invalid --since"):
            parse_since(bad, now)
    assert stamp(now) == "2026-01-02T03:04:05.000Z"


LOG = b"".join(
    (f"2026-01-02T03:04:0{n}.000Z {text}\n").encode()
    for n, text in enumerate(
        [
            "fissile INFO [-] instance a1 ready (pid 7)",
            "a1 INFO [r1] info from r1",
            "a1 STDOUT [r1] printed",
            "b2 WARNING [r2] warned",
            "a1 STDERR [r3] to stderr",
            "b2 ERROR [r2] Traceback (most recent call last):",
            "a1 OUTPUT [-] untagged",
        ]
    )
)


def messages(data: bytes) -> list[str]:
    return [parse(line).message for line in data.decode().splitlines()]


def test_filters() -> None:
    assert LogFilter().everything and LogView(LogFilter()).passthrough
    assert not LogView(LogFilter(), as_json=True).passthrough
    warning = LogView(LogFilter(level=level_rank("warning")))
    assert messages(warning.history(LOG, None)) == [
        "warned",
        "to stderr",
        "Traceback (most recent call last):",
    ]
    by_instance = LogView(LogFilter(instance="b2"))
    assert messages(by_instance.history(LOG, None)) == [
        "warned",
        "Traceback (most recent call last):",
    ]
    platform = LogView(LogFilter(instance="fissile"))
    assert messages(platform.history(LOG, None)) == ["instance a1 ready (pid 7)"]
    since = LogView(LogFilter(since="2026-01-02T03:04:05.000Z"))
    assert messages(since.history(LOG, None)) == [
        "Traceback (most recent call last):",
        "untagged",
    ]
    assert by_instance.line(b"2026-01-02T03:04:09.000Z a1 INFO [x] not b2\n") is None
    kept = by_instance.line(b"2026-01-02T03:04:09.000Z b2 INFO [x] b2's\n")
    assert kept == b"2026-01-02T03:04:09.000Z b2 INFO [x] b2's\n"


def test_tail_counts_the_lines_that_pass() -> None:
    info_and_up = LogView(LogFilter(level=level_rank("info"), instance="a1"))
    assert messages(info_and_up.history(LOG, 2)) == ["to stderr", "untagged"]
    assert info_and_up.history(LOG, 0) == b""
    everything = LogView(LogFilter())
    assert everything.history(LOG, 100) == LOG
    assert everything.history(LOG.rstrip(b"\n"), 1).endswith(b"untagged\n")


def test_json_lines() -> None:
    view = LogView(LogFilter(instance="b2"), as_json=True)
    objects = [json.loads(line) for line in view.history(LOG, None).splitlines()]
    assert objects == [
        {
            "time": "2026-01-02T03:04:03.000Z",
            "instance": "b2",
            "level": "WARNING",
            "invocation_id": "r2",
            "message": "warned",
            "source": "function",
        },
        {
            "time": "2026-01-02T03:04:05.000Z",
            "instance": "b2",
            "level": "ERROR",
            "invocation_id": "r2",
            "message": "Traceback (most recent call last):",
            "source": "function",
        },
    ]


def test_lines_split_at_newlines_only() -> None:
    assert split_lines(b"a\rb\nc\n") == [b"a\rb\n", b"c\n"]
    assert split_lines(b"a\nrest") == [b"a\n", b"rest"]
    assert split_lines(b"") == []
    view = LogView(LogFilter(level=level_rank("info")))
    carriage = b"2026-01-02T03:04:05.000Z a1 INFO [x] 50%\r100%\n"
    assert view.history(carriage, None) == carriage
