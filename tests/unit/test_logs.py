"""fissile/observability/logs.py: per-function log files fed by instances' output pipes."""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import fissile.observability.logs as logs_module
from fissile.observability.logs import LogBook
from fissile.observability.ratelimit import OutputLimit


@dataclass
class Source:
    id: str
    env: str
    function: str | None


def lines(path: Path) -> list[str]:
    """The log's lines without their timestamps."""
    return [line.split(" ", 1)[1] for line in path.read_text().splitlines()]


async def feed(book: LogBook, source: Source, chunks: list[bytes]) -> None:
    """Write ``chunks`` into an attached pipe, one read's worth at a time, then close it."""
    read_fd, write_fd = os.pipe()
    book.attach(source, read_fd)
    for chunk in chunks:
        os.write(write_fd, chunk)
        await asyncio.sleep(0.01)
    os.close(write_fd)


async def logged(path: Path, expected: list[str]) -> None:
    for _ in range(250):
        if path.exists() and lines(path) == expected:
            return
        await asyncio.sleep(0.01)
    assert path.exists() and lines(path) == expected


async def test_lines_go_to_the_function_log(tmp_path: Path) -> None:
    book = LogBook(tmp_path)
    await feed(book, Source("i1", "python", "hello"), [b"first line\nsecond ", b"line\n"])
    await logged(
        book.function_log("hello"), ["i1 OUTPUT [-] first line", "i1 OUTPUT [-] second line"]
    )
    book.close()


async def test_unassigned_instances_log_to_their_environment(tmp_path: Path) -> None:
    book = LogBook(tmp_path)
    await feed(book, Source("i7", "python", None), [b"warming up\n"])
    await logged(book.environment_log("python"), ["i7 OUTPUT [-] warming up"])
    assert not book.function_log("python").exists()
    book.close()


async def test_partial_last_line_and_bad_utf8(tmp_path: Path) -> None:
    book = LogBook(tmp_path)
    await feed(book, Source("i1", "python", "f"), [b"complete\n", b"no newline \xff"])
    await logged(
        book.function_log("f"), ["i1 OUTPUT [-] complete", "i1 OUTPUT [-] no newline \ufffd"]
    )
    book.close()


async def test_unterminated_output_is_split_at_the_line_limit(tmp_path: Path) -> None:
    book = LogBook(tmp_path)
    await feed(book, Source("i1", "python", "f"), [b"x" * 10000, b"y" * 10000, b"\n"])
    expected = ["i1 OUTPUT [-] " + "x" * 10000 + "y" * 6384, "i1 OUTPUT [-] " + "y" * 3616]
    await logged(book.function_log("f"), expected)
    book.close()


async def test_tagged_lines_keep_their_level_and_invocation(tmp_path: Path) -> None:
    book = LogBook(tmp_path)
    chunks = [
        b"\x1eINFO abc-1 hello\n\x1eSTDOUT - printed at import\n",
        b"\x1eERROR abc-2 Traceback (most recent call last):\n",
        b"\x1eNOTALEVEL x looks tagged\nplain\n",
    ]
    await feed(book, Source("i1", "python", "f"), chunks)
    expected = [
        "i1 INFO [abc-1] hello",
        "i1 STDOUT [-] printed at import",
        "i1 ERROR [abc-2] Traceback (most recent call last):",
        "i1 OUTPUT [-] NOTALEVEL x looks tagged",
        "i1 OUTPUT [-] plain",
    ]
    await logged(book.function_log("f"), expected)
    book.close()


async def test_a_cut_line_keeps_its_tag(tmp_path: Path) -> None:
    book = LogBook(tmp_path)
    chunks = [b"\x1eWARNING abc-1 " + b"x" * 20000, b"y" * 100 + b"\n"]
    await feed(book, Source("i1", "python", "f"), chunks)
    first = "i1 WARNING [abc-1] " + "x" * (16384 - len("\x1eWARNING abc-1 "))
    rest = "x" * (20000 - (16384 - len("\x1eWARNING abc-1 "))) + "y" * 100
    await logged(book.function_log("f"), [first, "i1 WARNING [abc-1] " + rest])
    book.close()


def test_platform_lines_carry_a_level_and_invocation(tmp_path: Path) -> None:
    book = LogBook(tmp_path)
    book.platform("f", "invocation abc cancelled", "WARNING", "abc")
    assert lines(book.function_log("f")) == ["fissile WARNING [abc] invocation abc cancelled"]
    book.close()


def test_platform_lines_and_timestamps(tmp_path: Path) -> None:
    book = LogBook(tmp_path)
    book.platform("hello", "instance i1 ready")
    (line,) = book.function_log("hello").read_text().splitlines()
    stamp, text = line.split(" ", 1)
    assert text == "fissile INFO [-] instance i1 ready"
    assert stamp.endswith("Z") and "T" in stamp and len(stamp) == len("2024-01-01T00:00:00.000Z")
    book.close()


def test_rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs_module, "MAX_LOG_BYTES", 200)
    book = LogBook(tmp_path)
    for n in range(10):
        book.platform("f", f"message number {n}")
    current = book.function_log("f")
    rotated = current.with_suffix(".log.1")
    assert rotated.exists()
    everything = lines(rotated) + (lines(current) if current.exists() else [])
    assert everything[-1] == "fissile INFO [-] message number 9"
    assert rotated.stat().st_size > 200
    book.close()


def test_forget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs_module, "MAX_LOG_BYTES", 100)
    book = LogBook(tmp_path)
    for n in range(5):
        book.platform("f", f"line {n} of a function that will be deleted")
    book.platform("g", "another function")
    book.forget("f")
    assert not book.function_log("f").exists()
    assert not book.function_log("f").with_suffix(".log.1").exists()
    assert book.function_log("g").exists()
    # A function of the same name starts a fresh log.
    book.platform("f", "reborn")
    assert lines(book.function_log("f")) == ["fissile INFO [-] reborn"]
    book.close()


# --- the output rate limit -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_output_limit_buckets_refill_with_time() -> None:
    clock = Clock()
    limit = OutputLimit(lines_per_second=3, bytes_per_second=100, clock=clock)
    assert [limit.admit(10) for _ in range(4)] == [True, True, True, False]  # lines run out
    clock.now += 0.5  # one and a half lines earned
    limit.refill()
    assert limit.admit(10) and not limit.admit(10)
    clock.now += 10  # a long silence refills to a second's worth, no more
    limit.refill()
    assert limit.admit(60) and not limit.admit(41) and limit.admit(40)  # bytes run out
    limit.drop(5, 123)
    assert limit.note() == (
        "[fissile] dropped 5 lines (123 bytes) of output: rate limit 3 lines/s, 100 bytes/s"
    )
    assert limit.note() is None


def notes(path: Path) -> list[tuple[int, int]]:
    found = []
    for line in lines(path):
        match = re.search(r"\[fissile\] dropped (\d+) lines \((\d+) bytes\)", line)
        if match:
            found.append((int(match[1]), int(match[2])))
    return found


async def test_a_flood_is_dropped_counted_and_noted(tmp_path: Path) -> None:
    book = LogBook(tmp_path, lines_per_second=50, bytes_per_second=1 << 20)
    started = time.monotonic()
    chunks = [b"".join(b"line %d\n" % (n * 1000 + i) for i in range(1000)) for n in range(5)]
    await feed(book, Source("i1", "python", "flood"), chunks)
    path = book.function_log("flood")
    deadline = time.monotonic() + 30
    while not notes(path) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # the end of the pipe is noted at once
    elapsed = time.monotonic() - started
    written = [line for line in lines(path) if "[fissile]" not in line]
    dropped = notes(path)
    noted = [line for line in lines(path) if "[fissile]" in line]
    assert all(line.startswith("i1 WARNING [-] [fissile] dropped") for line in noted)
    # Every line is accounted for: written, or counted in a note.
    assert len(written) + sum(n for n, _ in dropped) == 5000
    assert 50 <= len(written) <= 50 + 50 * elapsed + 1
    assert written[:50] == [f"i1 OUTPUT [-] line {i}" for i in range(50)]
    # A note at most once a second, plus the one when the pipe closes.
    assert 1 <= len(dropped) <= elapsed / logs_module.NOTE_INTERVAL + 2
    book.close()


async def test_bytes_are_limited_too(tmp_path: Path) -> None:
    book = LogBook(tmp_path, lines_per_second=1000, bytes_per_second=10_000)
    await feed(book, Source("i1", "python", "wide"), [b"w" * 999 + b"\n"] * 20)
    path = book.function_log("wide")
    deadline = time.monotonic() + 30
    while not notes(path) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    written = [line for line in lines(path) if "[fissile]" not in line]
    assert 10 <= len(written) < 20
    assert len(written) + sum(n for n, _ in notes(path)) == 20
    assert sum(size for _, size in notes(path)) == (20 - len(written)) * 1000
    book.close()
