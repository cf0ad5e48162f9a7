"""fissile/observability/access.py: formatting, batching, bounds, rotation, recent records."""

from __future__ import annotations

import asyncio
import json
import marshal
import time
from pathlib import Path

import pytest

from fissile.observability import access
from fissile.observability.access import AccessLog, Record, RecordFields, text_line


def record(
    function: str | None = "fn", status: int = 200, path: str = "/p", started: float | None = None
) -> Record:
    return Record(
        time.monotonic() if started is None else started,
        (function, "route-a" if function else None, "GET", path, "127.0.0.1"),
        status,
        13,
        0.0012345,
        0.0005,
        "i1",
        True,
        7,
        b"4bf92f3577b34da6a3ce929d0e0e4736",
    )


async def lines_written(path: Path, count: int, timeout: float = 30.0) -> None:
    """Until the log holds ``count`` lines (written off the loop): a generous deadline."""
    deadline = time.monotonic() + timeout
    while not path.exists() or path.read_text().count("\n") < count:
        assert time.monotonic() < deadline, f"{path} has not {count} lines in {timeout:g}s"
        await asyncio.sleep(0.01)


def test_json_fields() -> None:
    log = AccessLog(None, "json", invocation_prefix="abcd")
    line = log.format_lines([record()], time.time() - time.monotonic())
    fields = json.loads(line)
    assert line.endswith("\n") and line.count("\n") == 1
    assert fields["function"] == "fn" and fields["route"] == "route-a"
    assert fields["status"] == 200 and fields["bytes"] == 13
    assert fields["duration_ms"] == 1.234 and fields["queue_ms"] == 0.5
    assert fields["invocation_id"] == "abcd00000007"
    assert fields["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert fields["cold"] is True and fields["client"] == "127.0.0.1"
    assert fields["time"].endswith("Z") and len(fields["time"]) == len("2026-01-01T00:00:00.000Z")
    assert (
        abs(time.time() - time.mktime(time.strptime(fields["time"][:19], "%Y-%m-%dT%H:%M:%S")))
        < 24 * 3600
    )  # the wall clock, not the monotonic one


def test_json_lines_say_what_the_api_says() -> None:
    # The usual record takes a %-template, the others an f-string: every line, parsed, is
    # the record as the API gives it (as_dict), for each mix of queue wait, invocation id
    # and trace id, and milliseconds at both ends of a second.
    log = AccessLog(None, "json", invocation_prefix="abcd")
    base = record().fields()
    records: list[RecordFields] = []
    for started in (1000.0, 1000.0009, 1000.9996, 1001.5):
        for queue in (None, 0.0, 0.0012345, 1.23456):
            for invocation in (7, 2**36 + 5, "given-id", None):
                for trace in (
                    b"4bf92f3577b34da6a3ce929d0e0e4736",
                    "0af7651916cd43dd8448eb211c80319c",
                    None,
                ):
                    for cold, instance, client in ((True, "i1", "127.0.0.1"), (False, None, None)):
                        endpoint = (*base[1][:4], client)
                        records.append(
                            (
                                started,
                                endpoint,
                                *base[2:5],
                                queue,
                                instance,
                                cold,
                                invocation,
                                trace,
                            )
                        )
    offset = 1.7e9
    lines = log.format_lines(records, offset).splitlines()
    assert len(lines) == len(records)
    for line, one in zip(lines, records, strict=True):
        assert json.loads(line) == log.as_dict(one, offset)


def test_records_sharing_an_endpoint_keep_their_own_fields() -> None:
    # Records sharing one endpoint tuple (marshal keeps it one object in the writer process):
    # the writer reuses what it spelt of the last record only while the endpoint, the status
    # and the size all repeat.
    log = AccessLog(None, "json", invocation_prefix="abcd")
    base = record().fields()
    shared = base[1]
    other = ("other", None, "POST", '/q"', None)
    records: list[RecordFields] = [
        (base[0], endpoint, status, size, *base[4:])
        for endpoint, status, size in (
            (shared, 200, 13),
            (shared, 200, 13),
            (shared, 404, 13),
            (shared, 404, None),
            (shared, 404, 0),
            (other, 404, 0),
            (shared, 404, 0),
            (shared, 200, 13),
        )
    ]
    for chunk in (records, marshal.loads(marshal.dumps(records))):
        lines = log.format_lines(chunk, 0.0).splitlines()
        assert [json.loads(line) for line in lines] == [log.as_dict(one, 0.0) for one in records]


def test_json_escapes_what_a_client_sent() -> None:
    log = AccessLog(None, "json")
    for path in ('/a"b\\c', "/\u00e9\n", "/plain"):
        line = log.format_lines([record(path=path, function=None)] * 2, 0.0)
        assert [json.loads(x)["path"] for x in line.splitlines()] == [path, path]


def test_text_line() -> None:
    log = AccessLog(None, "text", invocation_prefix="abcd")
    line = log.format_lines([record(function=None, status=404)], 0.0)
    assert " GET /p 404 13 1.234ms fn=- route=- queue=0.500ms " in line
    assert "cold=yes invocation=abcd00000007 trace=4bf92f35" in line
    assert line.endswith("\n")
    fields = log.as_dict(record(), 0.0)
    fields.update(queue_ms=None, bytes=None, client=None)
    assert text_line(fields).split()[1] == "-"  # no client


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError):
        AccessLog(None, "xml")  # type: ignore[arg-type]


async def test_batches_are_written_together(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(path, "json", interval=0.05)
    for i in range(5):
        log.add(record(path=f"/{i}"))
    assert not path.exists() or path.read_text() == ""  # nothing written per request
    await lines_written(path, 5)
    assert [json.loads(line)["path"] for line in path.read_text().splitlines()] == [
        f"/{i}" for i in range(5)
    ]
    log.close()


async def test_a_full_batch_is_written_before_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(path, "text", interval=60, batch=3)
    for _ in range(3):
        log.add(record())
    await lines_written(path, 3)
    assert path.read_text().count("\n") == 3
    log.close()


async def test_pending_records_are_bounded_and_the_loss_said(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(path, "json", interval=60, batch=10_000, max_pending=4)
    for _ in range(10):
        log.add(record())
    assert log.dropped == 6
    log.close()  # writes what is pending, and a note of what was not
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 5 and lines[-1]["dropped"] == 6
    assert len(log.recent("fn")) == 10  # the recent records are kept regardless


async def test_write_errors_are_counted_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "gone" / "access.log"
    log = AccessLog(path, "json", interval=60)
    path.parent.rmdir()  # as a disk that refuses writes
    log.add(record())
    log.close()
    assert log.dropped == 1


def test_rotation(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(path, "json", max_bytes=600)
    line = log.format_lines([record()], 0.0)
    for _ in range(3):
        log.write_lines((line * 2).encode(), 2)
    rotated = path.with_name("access.log.1")
    assert rotated.exists()
    assert path.stat().st_size <= 600 and rotated.stat().st_size <= 600
    log.close()


def test_rotation_keeps_the_backups_asked_for_newest_first(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(path, "json", max_bytes=100, backups=3)
    for i in range(6):  # each write passes the limit: five rotations
        log.write_lines(f"write {i}\n".encode() * 20, 20)
    log.close()
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["access.log", "access.log.1", "access.log.2", "access.log.3"]
    assert path.read_text().startswith("write 5")
    for n in (1, 2, 3):  # access.log.1 the newest
        assert path.with_name(f"access.log.{n}").read_text().startswith(f"write {5 - n}")


def test_rotation_without_backups_starts_the_log_over(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(path, "json", max_bytes=100, backups=0)
    for i in range(3):
        log.write_lines(f"write {i}\n".encode() * 20, 20)
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["access.log"]
    assert path.read_text() == "write 2\n" * 20


async def test_the_writer_process_rotates_as_asked(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(path, "json", interval=60, batch=4, max_bytes=1000, backups=2)
    await log.start()
    for i in range(40):  # ten batches of ~330-byte lines: past 1,000 bytes every few
        log.add(record(path=f"/r{i}"))
    await log.aclose()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "access.log",
        "access.log.1",
        "access.log.2",
    ]
    paths = [
        json.loads(line)["path"]
        for name in ("access.log.2", "access.log.1", "access.log")
        for line in path.with_name(name).read_text().splitlines()
    ]
    assert paths == [f"/r{i}" for i in range(40 - len(paths), 40)]  # the newest, in order


async def test_recent_per_function_is_bounded_and_ordered() -> None:
    log = AccessLog(None, "json", recent=3)
    base = time.monotonic()
    for i in range(5):
        log.add(record(path=f"/a{i}", started=base + i))
    log.add(record(function="other", path="/b", started=base + 2.5))
    log.add(record(function=None, path="/none"))
    assert [r["path"] for r in log.recent("fn")] == ["/a2", "/a3", "/a4"]
    assert [r["path"] for r in log.recent("fn", limit=1)] == ["/a4"]
    assert log.recent("nobody") == []
    assert [r["path"] for r in log.recent_all()] == ["/a2", "/b", "/a3", "/a4"]
    log.forget("fn")
    assert log.recent("fn") == []


def test_off_keeps_nothing(tmp_path: Path) -> None:
    log = AccessLog(tmp_path / "access.log", "off")
    assert not log.enabled and log.path is None


async def test_the_writer_process_formats_and_writes_batches(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(path, "json", interval=0.01, invocation_prefix="abcd", in_process=False)
    await log.start()
    try:
        for i in range(3):
            log.add(record(path=f"/{i}"))
        deadline = time.monotonic() + 10
        while (not path.exists() or path.read_text().count("\n") < 3) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.02)
        log.add(record(path="/last"))
    finally:
        await log.aclose()  # sends what is pending, waits for the process
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["path"] for line in lines] == ["/0", "/1", "/2", "/last"]
    assert lines[0]["invocation_id"] == "abcd00000007"
    assert log._process is not None and log._process.returncode == 0


@pytest.mark.parametrize("functions", ["C", "Python"])
async def test_recent_from_pending_batches_one_function_or_several(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, functions: str
) -> None:
    # With a file, records gather in a batch and reach the recent requests when folded: a
    # batch of one function's records in one go (its last ``recent``), a mixed one record by
    # record; a fold mid-batch (a reader) and the rest later keep the order. The functions of
    # a batch found in C (``_records.functions``) or, without it, in Python.
    if functions == "Python":
        monkeypatch.setattr(access, "_functions", None)
    log = AccessLog(tmp_path / "access.log", "json", recent=3, interval=60, batch=10_000)
    base = time.monotonic()
    for i in range(5):
        log.add(record(path=f"/a{i}", started=base + i))
    assert [r["path"] for r in log.recent("fn")] == ["/a2", "/a3", "/a4"]
    log.add(record(path="/a5", started=base + 5))
    log.add(record(function="other", path="/b", started=base + 5.5))
    log.add(record(function=None, path="/none", started=base + 5.7))
    log.add(record(path="/a6", started=base + 6))
    assert [r["path"] for r in log.recent("fn")] == ["/a4", "/a5", "/a6"]
    assert [r["path"] for r in log.recent("other")] == ["/b"]
    for i in range(7, 12):
        log.add(record(path=f"/a{i}", started=base + i))
    log.close()
    assert [r["path"] for r in log.recent("fn")] == ["/a9", "/a10", "/a11"]
    assert (tmp_path / "access.log").read_text().count("\n") == 14


async def test_a_batch_is_sent_by_the_record_completing_it(tmp_path: Path) -> None:
    # The journal's ``add`` says when a batch is complete: it is handed to the writer at once,
    # and the next record starts a new batch with its own timer.
    path = tmp_path / "access.log"
    log = AccessLog(path, "json", interval=60, batch=4)
    if log._journal is None:
        pytest.skip("fissile was installed without its C records module")
    for i in range(4):
        assert log._journal.pending == i
        log.add(record(path=f"/{i}"))
    assert log._journal.pending == 0
    log.add(record(path="/4"))
    assert log._journal.pending == 1 and log._timer is not None
    await lines_written(path, 4)
    log.close()
    assert [json.loads(line)["path"] for line in path.read_text().splitlines()] == [
        f"/{i}" for i in range(5)
    ]


async def test_a_batch_of_records_is_sent_by_the_record_completing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the journal, ``add`` only appends below one short of a batch; the record that
    # completes it sends it at once, and the next one starts a new batch with its own timer.
    monkeypatch.setattr(access, "_Journal", None)
    path = tmp_path / "access.log"
    log = AccessLog(path, "json", interval=60, batch=4)
    for i in range(4):
        assert len(log._pending) == i
        log.add(record(path=f"/{i}"))
    assert log._pending == []
    log.add(record(path="/4"))
    assert len(log._pending) == 1 and log._timer is not None
    await lines_written(path, 4)
    log.close()
    assert [json.loads(line)["path"] for line in path.read_text().splitlines()] == [
        f"/{i}" for i in range(5)
    ]


async def test_the_writer_process_gets_chunks_marshalled_as_they_fill(tmp_path: Path) -> None:
    # With a writer process, every ``chunk`` records are marshalled at once (the records
    # themselves die young); a batch's chunks go out together once ``batch`` records are
    # packed, the rest at the interval or when the log closes: every line, in order.
    path = tmp_path / "access.log"
    log = AccessLog(path, "json", interval=60, batch=8, chunk=3, in_process=False)
    await log.start()
    try:
        for i in range(7):
            log.add(record(path=f"/{i}"))
        assert len(log._pending) == 1 and log._packed_count == 6 and len(log._packed) == 2
        assert [r["path"] for r in log.recent("fn")] == [f"/{i}" for i in range(7)]
        for i in range(7, 10):
            log.add(record(path=f"/{i}"))  # the third chunk makes 9 >= 8: all sent
        assert log._packed == [] and log._packed_count == 0 and len(log._pending) == 1
        deadline = time.monotonic() + 10
        while (not path.exists() or path.read_text().count("\n") < 9) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.02)
        assert path.read_text().count("\n") == 9
    finally:
        await log.aclose()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["path"] for line in lines] == [f"/{i}" for i in range(10)]
    assert [r["path"] for r in log.recent("fn", limit=3)] == ["/7", "/8", "/9"]


async def test_the_writer_process_says_records_lost_before(tmp_path: Path) -> None:
    # Records dropped while the writer process was behind are said in a line of their own,
    # before the next records sent.
    path = tmp_path / "access.log"
    log = AccessLog(path, "json", interval=60, in_process=False)
    await log.start()
    try:
        log._unreported = 5  # as _send counts a batch it could not send
        log.add(record(path="/after"))
    finally:
        await log.aclose()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["dropped"] == 5 and lines[1]["path"] == "/after"


def test_more_chunks_than_writev_takes_are_written_whole(tmp_path: Path) -> None:
    # writev() refuses more buffers than IOV_MAX (1024 on Linux): they are joined first.
    path = tmp_path / "access.log"
    log = AccessLog(path, "json")
    assert log.write_lines([b"x\n"] * 3000, 3000) == 0
    log.close()
    assert path.read_text().count("x\n") == 3000


async def test_lines_packed_before_the_writer_process_started_come_first(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(path, "json", interval=60, chunk=2, in_process=False)
    for i in range(3):
        log.add(record(path=f"/{i}"))  # the first two packed as lines: no process yet
    await log.start()
    try:
        log.add(record(path="/3"))
    finally:
        await log.aclose()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["path"] for line in lines] == ["/0", "/1", "/2", "/3"]
