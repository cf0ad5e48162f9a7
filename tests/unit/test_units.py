"""fissile/_units.py: the human units of flags and specs."""

from __future__ import annotations

import pytest

from fissile._units import format_duration, format_memory, parse_duration, parse_memory


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("1.5", 1.5),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        (" 30 s ", 30.0),
        ("0", 0.0),
    ],
)
def test_parse_duration(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "abc", "10x", "1.5.2s", "-1", "s", "10 seconds"])
def test_parse_duration_rejects_garbage(value: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)


def test_parse_duration_rejects_negative_numbers_and_bools() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_duration(-1)
    with pytest.raises(ValueError, match="negative"):
        parse_duration(-0.5)
    with pytest.raises(ValueError, match="number of seconds"):
        parse_duration(True)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1, "1s"),
        (59, "59s"),
        (60, "1m"),
        (90, "90s"),
        (120, "2m"),
        (3600, "1h"),
        (5400, "90m"),
        (86400, "24h"),
        (0.5, "500ms"),
        (0.25, "250ms"),
        (1.5, "1.5s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0, 1, 0.5, 1.5, 59, 60, 90, 3600, 5400, 86400, 0.125])
def test_duration_round_trip(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "amount"),
    [
        (268435456, 268435456),
        ("268435456", 268435456),
        ("256Mi", 256 * 1024**2),
        ("1Gi", 1024**3),
        ("1.5Gi", int(1.5 * 1024**3)),
        ("512M", 512 * 1000**2),
        ("2G", 2 * 1000**3),
        ("4Ki", 4096),
        ("0.5Ki", 512),
        ("10k", 10_000),
        ("10K", 10_000),
        ("100B", 100),
        ("1Ti", 1024**4),
        (" 64 Mi ", 64 * 1024**2),
    ],
)
def test_parse_memory(value: str | int, amount: int) -> None:
    assert parse_memory(value) == amount


@pytest.mark.parametrize("value", ["", "abc", "256MB", "256mi", "1.2.3Gi", "-5Mi", "Mi"])
def test_parse_memory_rejects_garbage(value: str) -> None:
    with pytest.raises(ValueError, match="invalid memory size"):
        parse_memory(value)


def test_parse_memory_rejects_negative_and_bools() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_memory(-1)
    with pytest.raises(ValueError, match="number of bytes"):
        parse_memory(False)


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (0, "0"),
        (100, "100"),
        (1000, "1000"),
        (1024, "1Ki"),
        (1536, "1536"),
        (256 * 1024**2, "256Mi"),
        (1024**3, "1Gi"),
        (3 * 1024**3, "3Gi"),
        (1024**3 + 1024**2, "1025Mi"),
    ],
)
def test_format_memory(amount: int, text: str) -> None:
    assert format_memory(amount) == text


@pytest.mark.parametrize("amount", [0, 1, 1000, 1024, 1536, 16 * 1024**2, 256 * 1024**2, 1024**3])
def test_memory_round_trip(amount: int) -> None:
    assert parse_memory(format_memory(amount)) == amount
