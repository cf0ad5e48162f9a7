"""fissile/cli/_follow.py: what ``fissile dev`` prints from the platform's logs."""

from __future__ import annotations

import json
from pathlib import Path

from fissile.cli._follow import Follower, Tail, function_line, request_line

RECORD = {
    "time": "2026-01-02T03:04:05.678Z",
    "function": "greet",
    "route": "greet",
    "method": "GET",
    "path": "/greet",
    "status": 200,
    "bytes": 9,
    "duration_ms": 1.234,
    "queue_ms": 0.0,
    "instance": "i1",
    "cold": True,
    "invocation_id": "abc",
    "trace_id": None,
    "client": "127.0.0.1",
}


def test_a_request_line() -> None:
    assert request_line(json.dumps(RECORD)) == "03:04:05 GET /greet -> 200 fn=greet 1.2ms cold"
    warm = {**RECORD, "cold": False, "function": None, "status": 404}
    assert request_line(json.dumps(warm)) == "03:04:05 GET /greet -> 404 fn=- 1.2ms"
    note = "2026-01-02T03:04:05Z access log: 3 records dropped (writing fell behind)"
    assert request_line(note) == note


def test_a_function_line() -> None:
    printed = "2026-01-02T03:04:05.678Z i1 STDOUT [abc] hello there"
    assert function_line("greet", printed) == "03:04:05 greet | hello there"
    logged = "2026-01-02T03:04:05.678Z i1 WARNING [abc] careful"
    assert function_line("greet", logged) == "03:04:05 greet WARNING | careful"
    platform = "2026-01-02T03:04:05.678Z fissile INFO [-] instance i1 ready (pid 7)"
    assert (
        function_line("greet", platform)
        == "03:04:05 greet (fissile) INFO | instance i1 ready (pid 7)"
    )


def test_a_tail_reads_whole_lines_and_follows_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "f.log"
    path.write_text("old\n")
    tail = Tail(path, from_start=False)
    assert tail.lines() == []  # there before: not new
    with path.open("a") as file:
        file.write("one\ntw")
    assert tail.lines() == ["one"]
    with path.open("a") as file:
        file.write("o\n")
    assert tail.lines() == ["two"]
    with path.open("a") as file:
        file.write("last of the old file\n")
    path.rename(tmp_path / "f.log.1")
    path.write_text("first of the new file\n")
    assert tail.lines() == ["last of the old file", "first of the new file"]
    tail.close()


def test_the_follower_prints_only_what_is_new(tmp_path: Path) -> None:
    functions = tmp_path / "logs" / "functions"
    functions.mkdir(parents=True)
    (functions / "old.log").write_text("2026-01-02T03:04:05.678Z i1 STDOUT [-] before\n")
    printed: list[str] = []
    follower = Follower(tmp_path, printed.append)
    follower.poll()
    assert printed == []
    (functions / "new.log").write_text("2026-01-02T03:04:06.000Z i2 STDOUT [-] made\n")
    with (functions / "old.log").open("a") as file:
        file.write("2026-01-02T03:04:07.000Z i1 STDOUT [-] after\n")
    (tmp_path / "logs" / "access.log").write_text(json.dumps(RECORD) + "\n")
    follower.poll()
    assert printed == [
        "03:04:06 new | made",
        "03:04:07 old | after",
        "03:04:05 GET /greet -> 200 fn=greet 1.2ms cold",
    ]
    follower.close()
