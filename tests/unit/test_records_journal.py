"""fissile/observability/_records.c's ``Journal``: each record formatted, counted and kept as
it is added. Its lines are ``json_lines``' byte for byte, however they are taken; its counts
are ``tally``'s; it keeps each function's last lines; past its bound it drops lines, never
counts or recent requests."""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import pytest

from fissile.observability.access import Record
from fissile.observability.metrics import DURATION_BUCKETS

try:
    from fissile.observability._records import Journal, json_lines, tally
except ImportError:  # built without a C compiler: allowed on a laptop, never in CI
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("fissile was installed without its C access-log formatter", allow_module_level=True)

PREFIX = "ab12"
# Names that need escaping, or not; many endpoints (more than the 64 a journal keeps spelt).
NAMES: list[str | None] = ["hello", "h\u00e9llo", 'q"b\\', "tab\tnl\n", "\U0001f600", "", None]
PATHS = [f"/p{i}" for i in range(100)] + ["/?q=%20", "/\u00e9"]


def random_record(rng: random.Random, now: float) -> tuple[Any, ...]:
    endpoint = (
        rng.choice(NAMES),
        rng.choice(NAMES),
        rng.choice(["GET", "POST"]),
        rng.choice(PATHS),
        rng.choice(["127.0.0.1", "".join(["127.0.", "0.1"]), None]),  # equal, not the same
    )
    return (
        now + rng.random() * 5,
        endpoint,
        rng.choice([200, 201, 404, 500]),
        rng.choice([None, 0, 13, 10**9]),
        rng.choice([rng.random() * 0.01, rng.random() * 300, 0.0, 0.0005]),
        rng.choice([None, 0.0, rng.random() * 0.01]),
        rng.choice(["i3", None, "\u00e9"]),
        rng.choice([True, False]),
        rng.choice([None, rng.randrange(0, 2**40), "a-given-id"]),
        rng.choice([None, b"%032x" % rng.getrandbits(128), f"{rng.getrandbits(128):032x}"]),
    )


ENDPOINT = ("fn", "fn-route", "GET", "/fn", "127.0.0.1")


def journal(keep: int = 5, max_pending: int = 1000, batch: int = 100) -> Journal:
    made = Journal(PREFIX, DURATION_BUCKETS, keep, max_pending, batch)
    made.counting = True
    return made


def record(
    i: int = 0, endpoint: tuple[Any, ...] = ENDPOINT, status: int = 200, waited: Any = 0.0
) -> Record:
    return Record(1000.0 + i, endpoint, status, 13, 0.002, waited, "i1", False, i, b"ab" * 16)


def test_lines_are_json_lines_byte_for_byte_across_takes() -> None:
    # What the journal spelt of an endpoint outlives a take (and the records that made it):
    # the lines of records added in several batches are those of all of them at once.
    rng = random.Random(20261204)
    now = time.monotonic()
    records = [Record(*random_record(rng, now)) for _ in range(3000)]
    made = journal(keep=3, max_pending=10_000, batch=10_000)
    made.offset = 123.5
    taken = b""
    count = 0
    for i, one in enumerate(records):
        made.add(one)
        if rng.random() < 0.02 or i == len(records) - 1:
            lines, records_taken, dropped = made.take()
            taken += lines
            count += records_taken
            assert dropped == 0
    assert count == len(records) and made.pending == 0
    assert taken == json_lines(records, 123.5, PREFIX)


def test_add_says_when_a_timer_or_a_write_is_due() -> None:
    made = journal(batch=3)
    assert [made.add(record(i)) for i in range(5)] == [1, 0, 2, 0, 0]
    assert made.pending == 5
    lines, count, dropped = made.take()
    assert count == 5 and lines.count(b"\n") == 5 and dropped == 0
    assert made.take() == (b"", 0, 0)
    assert made.add(record(6)) == 1  # the first pending again


def test_past_max_pending_lines_are_dropped_but_counted_and_kept() -> None:
    made = journal(keep=10, max_pending=4)
    for i in range(10):
        made.add(record(i))
    assert made.pending == 4 and made.dropped == 6
    lines, count, dropped = made.take()
    assert count == 4 and dropped == 6 and made.dropped == 0
    assert [json.loads(line)["invocation_id"] for line in lines.splitlines()] == [
        f"{PREFIX}{i:08x}" for i in range(4)
    ]
    assert len(made.recent("fn", 100)) == 10
    ((function, statuses, *_),) = made.tallies()
    assert function == "fn" and statuses == {200: 10}


def test_tallies_are_tallys_counts_of_the_counted_records() -> None:
    rng = random.Random(9)
    now = time.monotonic()
    records = [Record(*random_record(rng, now)) for _ in range(2000)]
    made = journal(keep=0, max_pending=10_000)
    counted = []
    for one in records:
        if rng.random() < 0.2:
            made.add_uncounted(one)
        else:
            made.add(one)
            counted.append(one)
    got = {entry[0]: entry for entry in made.tallies()}
    want = {entry[0]: entry for entry in tally(counted, DURATION_BUCKETS)}
    assert set(got) == set(want)
    for function, (_, statuses, durations, duration_sum, waits, wait_sum, *rest) in got.items():
        _, w_statuses, w_durations, w_duration_sum, w_waits, w_wait_sum, *w_rest = want[function]
        assert statuses == w_statuses and durations == w_durations and waits == w_waits
        assert rest == w_rest
        assert duration_sum == pytest.approx(w_duration_sum)
        assert wait_sum == pytest.approx(w_wait_sum)
    assert made.tallies() == []  # taken: counted once


def test_records_are_not_counted_while_counting_is_off() -> None:
    made = journal()
    made.counting = False
    made.add(record())
    assert made.tallies() == [] and made.pending == 1
    made.counting = True
    made.add(record(1, status=500))
    ((_, statuses, *_),) = made.tallies()
    assert statuses == {500: 1}


def test_recent_lines_per_function_are_bounded_and_oldest_first() -> None:
    made = journal(keep=3)
    other = ("".join(["oth", "er"]), None, "POST", "/o", None)  # equal, not the same str
    nobody = (None, None, "GET", "/nowhere", None)
    for i in range(5):
        made.add(record(i))
    made.add(record(5, endpoint=other))
    made.add(record(6, endpoint=nobody))
    made.add(record(7, endpoint=("other", None, "POST", "/o", None)))
    ids = [json.loads(line)["invocation_id"] for line in made.recent("fn", 100)]
    assert ids == [f"{PREFIX}{i:08x}" for i in (2, 3, 4)]
    assert [json.loads(line)["invocation_id"] for line in made.recent("fn", 1)] == [
        f"{PREFIX}00000004"
    ]
    assert made.recent("fn", 0) == [] and made.recent("nobody", 5) == []
    assert len(made.recent("other", 5)) == 2
    assert made.functions() == ["fn", "other"]  # a record with no function is not kept


def test_forgetting_a_function_leaves_the_others_whole() -> None:
    made = journal(keep=2)
    names = ["a", "b", "c"]
    for i, name in enumerate(names * 2):
        made.add(record(i, endpoint=(name, None, "GET", f"/{name}", None)))
    made.forget("a")  # the last entry ("c") takes its place
    made.forget("nobody")
    assert made.functions() == ["c", "b"]
    assert made.recent("a", 5) == []
    assert [json.loads(line)["path"] for line in made.recent("c", 5)] == ["/c", "/c"]
    made.add(record(9, endpoint=("c", None, "GET", "/c9", None)))
    made.add(record(10, endpoint=("a", None, "GET", "/a10", None)))
    assert [json.loads(line)["path"] for line in made.recent("c", 5)] == ["/c", "/c9"]
    assert [json.loads(line)["path"] for line in made.recent("a", 5)] == ["/a10"]
    assert {entry[0]: entry[1] for entry in made.tallies()} == {
        "b": {200: 2},
        "c": {200: 3},
        "a": {200: 1},
    }


@pytest.mark.parametrize(
    "bad",
    [
        ("not", "a", "record"),
        (1000.0, ("f", "r", "GET"), 200, 1, 0.1, None, "i", True, 1, b"ab"),
        (1000.0, ("f", "r", "GET", "/", "c"), "200", 1, 0.1, None, "i", True, 1, b"ab"),
        (1000.0, ("f", "r", "GET", "/", "c"), 200, 1, 0.1, None, "i", True, -1, b"ab"),
        (1000.0, ("f", "r", "GET", "/", 7), 200, 1, 0.1, None, "i", True, 1, b"ab"),
        (1000.0, (7, "r", "GET", "/", "c"), 200, 1, 0.1, None, "i", True, 1, b"ab"),
        (1000.0, ("f", "r", "GET", "/", "c"), 10**30, 1, 0.1, None, "i", True, 1, b"ab"),
    ],
)
def test_a_record_it_cannot_take_leaves_nothing_behind(bad: Any) -> None:
    made = journal()
    made.add(record(0))
    with pytest.raises((TypeError, ValueError)):
        made.add(bad)
    made.add(record(1))
    lines, count, _ = made.take()
    assert count == 2 and [json.loads(line) for line in lines.splitlines()]  # whole lines
    assert json.loads(lines.splitlines()[1])["invocation_id"] == f"{PREFIX}00000001"
    ((_, statuses, *_),) = made.tallies()
    assert statuses == {200: 2}


def test_its_arguments_are_checked() -> None:
    with pytest.raises(TypeError):
        Journal(PREFIX, [0.1], 1, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Journal(PREFIX, (1,), 1, 1, 1)
    with pytest.raises(ValueError):
        Journal(PREFIX, DURATION_BUCKETS, -1, 1, 1)
    with pytest.raises(ValueError):
        Journal(PREFIX, DURATION_BUCKETS, 1, 1, 0)
    made = journal()
    with pytest.raises(TypeError):
        made.offset = "soon"  # type: ignore[assignment]
