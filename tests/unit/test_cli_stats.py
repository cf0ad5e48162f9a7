from typing import Any

from fissile.cli.stats import ms, per_second, top_table


def stats(name: str, rate: float, requests: int, **fields: Any) -> dict[str, Any]:
    return {
        "function": name,
        "rate": rate,
        "requests": requests,
        "error_rate": fields.get("error_rate", 0.0),
        "p50_ms": fields.get("p50_ms"),
        "p99_ms": fields.get("p99_ms"),
        "instances": {"ready": 1, "busy": 0},
        "cold_starts": 0,
        "queued": 0,
        "crashes": fields.get("crashes", 0),
    }


def test_top_puts_the_busiest_first_with_numbers_aligned_right() -> None:
    lines = top_table(
        [
            stats("quiet", 0.0, 0),
            stats("busy", 120.5, 7230, error_rate=0.0125, p50_ms=0.8, p99_ms=12.3),
            stats("alpha", 0.0, 0),
        ]
    )
    assert lines[0].split() == [
        "FUNCTION", "REQ/S", "REQS", "ERR%", "P50", "P99", "WARM", "BUSY", "COLD", "QUEUE",
        "CRASHES",
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:]] == ["busy", "alpha", "quiet"]
    assert lines[1].split()[1:6] == ["120.5", "7230", "1.2", "0.80ms", "12ms"]
    assert lines[2].split()[4:6] == ["-", "-"]
    # Right-aligned: every row's REQS ends where its header does.
    end = lines[0].index("REQS") + len("REQS")
    assert all(line[:end].endswith(("REQS", "7230", " 0")) for line in lines)


def test_durations_and_rates_are_short() -> None:
    assert [ms(v) for v in (None, 0.5, 15.2, 1500)] == ["-", "0.50ms", "15ms", "1.50s"]
    assert [per_second(v) for v in (0, 0.083, 12.34)] == ["0.0", "0.08", "12.3"]
