"""fissile/observability/_records.c: the access log's JSON lines in C are the lines the
Python formatter makes, byte for byte; and the log formats in process with it (no writer
process)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from fissile.observability import access
from fissile.observability.access import AccessLog, Record, RecordFields
from fissile.observability.metrics import DURATION_BUCKETS, FunctionMetrics

try:
    from fissile.observability._records import bind, functions, json_lines, tally
except ImportError:  # built without a C compiler: allowed on a laptop, never in CI
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("fissile was installed without its C access-log formatter", allow_module_level=True)

PREFIX = "ab12"
NAMES: list[str | None] = [
    "hello",
    "h\u00e9llo",
    'quote"and\\backslash',
    "tab\tnewline\nreturn\r",
    "\U0001f600 outside the BMP",
    "\x00\x08\x0c\x1f\x7f controls",
    "/p?q=1&x=%20",
    "",
    None,
]


def random_record(rng: random.Random, now: float) -> RecordFields:
    path = rng.choice([name for name in NAMES if name is not None])
    endpoint = (
        rng.choice(NAMES),
        rng.choice(NAMES),
        rng.choice(["GET", "POST", "DELETE"]),
        path,
        rng.choice(NAMES),
    )
    duration = rng.choice(
        [rng.random() * 0.01, rng.random() * 300, 0.0, 0.0000625, 1e-9, 0.0005, 123456.789]
    )
    queue = rng.choice([None, 0.0, rng.random() * 0.01, 0.0000625])
    invocation: int | str | None = rng.choice(
        [None, rng.randrange(0, 2**40), 0, "a-given-id", '\u00e9"id']
    )
    trace: bytes | str | None = rng.choice(
        [None, b"%032x" % rng.getrandbits(128), f"{rng.getrandbits(128):032x}"]
    )
    return (
        now + rng.random() * 5,
        endpoint,
        rng.choice([200, 201, 404, 429, 500, 503]),
        rng.choice([None, 0, 13, 10**9]),
        duration,
        queue,
        rng.choice(["i3", None, "\u00e9"]),
        rng.choice([True, False]),
        invocation,
        trace,
    )


def test_lines_are_the_python_formatters_byte_for_byte() -> None:
    log = AccessLog(None, "json", invocation_prefix=PREFIX)
    rng = random.Random(20261203)
    now = time.monotonic()
    offset = time.time() - now
    for _ in range(500):
        records = [random_record(rng, now) for _ in range(rng.randrange(1, 30))]
        expected = log.format_lines(records, offset).encode()
        assert json_lines(records, offset, PREFIX) == expected
    for line in json_lines(records, offset, PREFIX).splitlines():
        json.loads(line)  # and each is JSON


def test_records_sharing_an_endpoint_are_spelt_as_apart() -> None:
    # C copies what a record shares with the last one (its endpoint tuple, status and size)
    # from that one's line: changes of any of them in between are spelt anew.
    log = AccessLog(None, "json", invocation_prefix=PREFIX)
    rng = random.Random(11)
    now = time.monotonic()
    endpoints = [random_record(rng, now)[1] for _ in range(3)]
    records: list[Record] = []
    for i in range(400):
        base = random_record(rng, now)
        endpoint = rng.choice(endpoints[:2] if i < 200 else endpoints)
        status = rng.choice([200, 200, 200, 500])
        size = rng.choice([13, 13, None, 10**12])
        records.append((base[0], endpoint, status, size, *base[4:]))
    offset = time.time() - now
    assert json_lines(records, offset, PREFIX) == log.format_lines(records, offset).encode()


def test_milliseconds_round_as_python_does_near_ties() -> None:
    # Three decimals of milliseconds: C rounds an integer count of thousandths where that
    # is sure to match "%.3f", and asks Python's dtoa within a thousandth of a tie.
    log = AccessLog(None, "json", invocation_prefix=PREFIX)
    rng = random.Random(7)
    endpoint = ("f", "r", "GET", "/", "c")
    records: list[Record] = []
    for _ in range(20_000):
        seconds = rng.randrange(0, 10**7) / 1e7 + rng.choice([0.0, 5e-7, -5e-7, 5e-10, 1e-12])
        seconds = max(seconds, 0.0)
        records.append((1000.0, endpoint, 200, 1, seconds, seconds / 3, "i", False, 7, b"ab"))
    records.append((1000.0, endpoint, 200, 1, 2.0**42, 1e300, "i", False, 7, b"ab"))
    records.append((1000.0, endpoint, 200, 1, float("inf"), float("nan"), "i", False, 7, b"ab"))
    assert json_lines(records, 0.0, PREFIX) == log.format_lines(records, 0.0).encode()


def test_a_trace_id_that_is_not_hex_is_still_escaped() -> None:
    endpoint = ("f", "r", "GET", "/", "c")
    record: Record = (1000.0, endpoint, 200, 1, 0.1, None, None, True, None, 'x"\u00e9')
    line = json.loads(json_lines([record], 0.0, PREFIX))
    assert line["trace_id"] == 'x"\u00e9' and line["queue_ms"] is None
    assert line["invocation_id"] is None and line["instance"] is None


@pytest.mark.parametrize(
    "bad",
    [
        ("not", "a", "record"),
        (1000.0, ("f", "r", "GET"), 200, 1, 0.1, None, "i", True, 1, b"ab"),  # short endpoint
        ("soon", ("f", "r", "GET", "/", "c"), 200, 1, 0.1, None, "i", True, 1, b"ab"),
        (1000.0, ("f", "r", "GET", "/", "c"), "200", 1, 0.1, None, "i", True, 1, b"ab"),
        (1000.0, ("f", "r", "GET", "/", "c"), 200, 1, 0.1, None, "i", True, -1, b"ab"),
        (-1e300, ("f", "r", "GET", "/", "c"), 200, 1, 0.1, None, "i", True, 1, b"ab"),
    ],
)
def test_records_of_another_shape_raise_instead_of_writing_nonsense(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        json_lines([bad], 0.0, PREFIX)


def test_the_log_formats_records_it_cannot_take_in_python() -> None:
    log = AccessLog(None, "json", invocation_prefix=PREFIX)
    odd: Any = (1000.0, ("f", "r", "GET", "/", "c"), 200, 1, 0.1, None, "i", True, -1, None)
    text = log._lines([odd], 0).decode()
    assert json.loads(text)["invocation_id"] == "ab12-0000001"


async def test_json_lines_are_formatted_in_process_and_appended_by_a_writer_process(
    tmp_path: Path,
) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(path, "json", interval=60, batch=8, chunk=3, invocation_prefix=PREFIX)
    await log.start()
    assert log.in_process and log._process is not None  # it only appends
    endpoint = ("fn", "route", "GET", "/", "127.0.0.1")
    for i in range(7):
        log.add(Record(time.monotonic(), endpoint, 200, 13, 0.001, 0.0, "i1", False, i, None))
    # Each formatted as it was added (the journal's lines), none of them kept as a record.
    assert log._journal is not None and log._journal.pending == 7
    assert log._pending == [] and log._packed == []
    for i in range(7, 9):  # the eighth makes a batch: sent at once
        log.add(Record(time.monotonic(), endpoint, 200, 13, 0.001, 0.0, "i1", False, i, None))
    assert log._journal.pending == 1
    await log.aclose()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["invocation_id"] for line in lines] == [f"{PREFIX}{i:08x}" for i in range(9)]
    assert log._thread is None  # no thread of the log's own wrote


async def test_the_writer_process_says_lines_it_was_sent_but_dropped(tmp_path: Path) -> None:
    # Lines the journal dropped (past max_pending) and batches the router could not send (the
    # writer process behind) are said in a line of their own, after what was written.
    path = tmp_path / "access.log"
    log = AccessLog(path, "json", interval=60, batch=1000, max_pending=3)
    await log.start()
    endpoint = ("fn", "route", "GET", "/", "127.0.0.1")
    for i in range(5):
        log.add(Record(time.monotonic(), endpoint, 200, 13, 0.001, 0.0, "i1", False, i, None))
    await log.aclose()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line.get("invocation_id") for line in lines[:3]] == [f"{i:08x}" for i in range(3)]
    assert lines[3]["dropped"] == 2 and len(lines) == 4


async def test_closing_waits_for_the_batch_on_the_writer_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch still being written when the log closes stays ahead of what was pending.
    path = tmp_path / "access.log"
    log = AccessLog(path, "json", interval=60, batch=2, chunk=2)
    write_lines = log.write_lines
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_write(data: bytes, count: int) -> int:
        loop.call_soon_threadsafe(started.set)
        time.sleep(0.3)
        return write_lines(data, count)

    monkeypatch.setattr(log, "write_lines", slow_write)
    endpoint = ("fn", "route", "GET", "/", "127.0.0.1")
    for i in range(3):
        log.add(Record(time.monotonic(), endpoint, 200, 1, 0.001, 0.0, "i1", False, i, None))
    await asyncio.wait_for(started.wait(), 30)
    await log.aclose()
    ids = [json.loads(line)["invocation_id"] for line in path.read_text().splitlines()]
    assert ids == [f"{i:08x}" for i in range(3)]


def test_a_machine_without_the_c_formatter_starts_a_writer_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(access, "_json_lines", None)
    log = AccessLog(tmp_path / "access.log", "json")
    assert not log.in_process
    text = AccessLog(tmp_path / "access.log", "text")
    assert not text.in_process  # text lines are formatted in Python, off the router


def test_tally_counts_as_python_does() -> None:
    rng = random.Random(5)
    now = time.monotonic()
    records = [Record(*random_record(rng, now)) for _ in range(2000)]
    records.append(
        Record(
            now, ("nan", None, "GET", "/", None), 200, 1, float("nan"), 0.0, None, False, None, None
        )
    )
    expected: dict[str, FunctionMetrics] = {}
    for record in records:
        function = record.endpoint[0]
        if function is not None:
            expected.setdefault(function, FunctionMetrics(function)).answered([record])
    counted: dict[str, FunctionMetrics] = {}
    for function, *counts in tally(records, DURATION_BUCKETS):
        counted.setdefault(function, FunctionMetrics(function)).add_tally(*counts)
    # The writer process's shape, tuples of the same fields, counts the same (the NaN
    # record left out: its sum is NaN, never equal).
    as_tuples = tally([record.fields() for record in records[:-1]], DURATION_BUCKETS)
    assert as_tuples == tally(records[:-1], DURATION_BUCKETS)
    assert set(counted) == set(expected)
    for function, metrics in counted.items():
        want = expected[function]
        assert metrics.requests == want.requests
        assert metrics.duration.counts == want.duration.counts
        assert metrics.duration.count == want.duration.count
        assert metrics.queue_wait.counts == want.queue_wait.counts
        assert metrics.queue_wait.count == want.queue_wait.count
        assert metrics.cold_starts == want.cold_starts
        if function != "nan":
            assert metrics.duration.sum == pytest.approx(want.duration.sum)
            assert metrics.queue_wait.sum == pytest.approx(want.queue_wait.sum)


@pytest.mark.parametrize(
    "bad",
    [
        (1000.0, ("f", "r", "GET", "/", "c"), 200.0, 1, 0.1, None, "i", True, 1, b"ab"),
        (1000.0, ("f", "r", "GET", "/", "c"), 200, 1, 1, None, "i", True, 1, b"ab"),
        (1000.0, ("f", "r", "GET", "/", "c"), 200, 1, 0.1, 0, "i", True, 1, b"ab"),
        (1000.0, ("f", "r", "GET", "/", "c"), 200, 1, 0.1, None, "i", 1, 1, b"ab"),
        (1000.0, "f", 200, 1, 0.1, None, "i", True, 1, b"ab"),
    ],
)
def test_tally_refuses_records_of_another_shape(bad: Any) -> None:
    with pytest.raises(TypeError):
        tally([bad], DURATION_BUCKETS)


def test_a_record_object_and_its_fields_make_the_same_line() -> None:
    # The router's records are objects (its Trips), read by C where their slots are; the
    # writer process gets tuples of the same fields. Both shapes, byte for byte, and a
    # subclass's instances (Trip's own slots come after the record's) read alike.
    class Subclass(Record):
        __slots__ = ("extra",)

    rng = random.Random(3)
    now = time.monotonic()
    tuples = [random_record(rng, now) for _ in range(300)]
    objects: list[Record] = []
    for i, fields in enumerate(tuples):
        one = Record(*fields) if i % 2 else Subclass(*fields)
        objects.append(one)
    offset = time.time() - now
    assert json_lines(objects, offset, PREFIX) == json_lines(tuples, offset, PREFIX)


def test_a_record_with_a_field_not_set_is_refused_not_read() -> None:
    # A Trip gets its endpoint, status and size when answered: one added before (a bug) is
    # a TypeError for the caller, never a read of an empty slot.
    from fissile.router.proxy import Trip

    trip = Trip(1000.0)
    with pytest.raises(TypeError, match="endpoint is not set"):
        json_lines([trip], 0.0, PREFIX)
    with pytest.raises(TypeError):
        tally([trip], DURATION_BUCKETS)
    trip.endpoint, trip.status, trip.size = ("f", "r", "GET", "/", None), 200, 2
    assert json.loads(json_lines([trip], 0.0, PREFIX))["status"] == 200


def test_bind_takes_only_a_class_with_every_field_a_slot() -> None:
    class Missing:
        __slots__ = ("started",)

    class Plain:  # fields as properties, not slots
        started = endpoint = status = size = duration = property(lambda self: 0)

    for wrong in (Missing, Plain, 3):
        with pytest.raises((TypeError, AttributeError)):
            bind(wrong)  # type: ignore[arg-type]
    # The bound class is unchanged by a refusal.
    record = Record(
        1000.0, ("f", None, "GET", "/", None), 200, 1, 0.1, None, None, False, None, None
    )
    assert json.loads(json_lines([record], 0.0, PREFIX))["function"] == "f"


def test_functions_are_distinct_in_the_order_they_come() -> None:
    def to(function: str | None) -> Record:
        endpoint = (function, None, "GET", "/", None)
        return Record(1000.0, endpoint, 200, 1, 0.1, None, None, False, None, None)

    assert functions([]) == []
    assert functions([to("a")] * 5) == ["a"]
    # Equal names that are not the same object are one function.
    assert functions([to("ab"), to("".join(["a", "b"])), to(None), to("c"), to(None), to("a")]) == [
        "ab",
        None,
        "c",
        "a",
    ]
    with pytest.raises(TypeError):
        functions([("not", "a", "record")])


def test_endpoints_equal_but_not_the_same_objects_are_spelt_right() -> None:
    # The router makes an endpoint tuple per request (its path decoded anew, a client's
    # address per connection): C finds what repeats by content, with the last record's and
    # then in a table of 64 entries; more endpoints than that, interleaved, crowd it.
    log = AccessLog(None, "json", invocation_prefix=PREFIX)
    rng = random.Random(17)

    def fresh(text: str | None) -> str | None:
        return None if text is None else "".join(list(text))  # equal, not the same object

    paths = [f"/p{i}" for i in range(100)] + ["/h\u00e9", "/\U0001f600"]
    records: list[Record] = []
    for i in range(3000):
        path = paths[i % 7] if i < 1000 else rng.choice(paths)
        client = rng.choice(["127.0.0.1", "10.0.0.2", None])
        endpoint = (fresh("fn"), fresh(rng.choice(["r", None])), "GET", fresh(path), fresh(client))
        status = rng.choice([200, 200, 200, 404])
        size = rng.choice([13, 13, None])
        records.append(
            Record(1000.0 + i / 7, endpoint, status, size, 0.001, 0.0, "i", False, i, None)
        )
    offset = 1.7e9
    assert json_lines(records, offset, PREFIX) == log.format_lines(records, offset).encode()


class _Name(str):
    def __hash__(self) -> int:  # Python code C must not run while it reads records
        raise AssertionError("hashed")


@pytest.mark.parametrize("client", [["not", "a", "str"], _Name("127.0.0.1")])
def test_an_endpoint_with_a_name_that_is_not_a_str_is_refused(client: Any) -> None:
    endpoint: Any = ("f", "r", "GET", "/", client)
    record = Record(1000.0, endpoint, 200, 1, 0.1, None, None, False, None, None)
    with pytest.raises(TypeError):
        json_lines([record], 0.0, PREFIX)


async def test_lines_are_still_written_when_the_writer_process_is_gone(tmp_path: Path) -> None:
    # The writer process killed (an operator, the OOM killer): the log's own thread takes over,
    # with the lines gathered since.
    path = tmp_path / "access.log"
    log = AccessLog(path, "json", interval=0.01, batch=1000)
    await log.start()
    process = log._process
    assert process is not None
    process.kill()
    await process.wait()
    endpoint = ("fn", "route", "GET", "/", "127.0.0.1")
    for i in range(5):
        log.add(Record(time.monotonic(), endpoint, 200, 13, 0.001, 0.0, "i1", False, i, None))
    deadline = time.monotonic() + 30
    while (not path.exists() or path.read_text().count("\n") < 5) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await log.aclose()
    ids = [json.loads(line)["invocation_id"] for line in path.read_text().splitlines()]
    assert ids == [f"{i:08x}" for i in range(5)] and log._process is None
    assert process.stdin is not None and process.stdin.transport.is_closing()  # let go
