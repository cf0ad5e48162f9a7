"""The router's access log and request metrics, as a user sees them: the lines in
``<data dir>/logs/access.log``, ``fissile fn logs --requests``, and the ``traceparent`` a
function receives. One dedicated platform (the access log is shared by every function)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from syskit import Platform, Spawn, wait_for, write

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"

SOURCE = """
import json

def main(request):
    path = request.path
    if path.endswith("/missing"):
        return "nothing here", 404
    if path.endswith("/boom"):
        raise RuntimeError("boom")
    return json.dumps({"traceparent": request.headers.get("traceparent"),
                       "tracestate": request.headers.get("tracestate")})
"""


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data = tmp_path_factory.mktemp("access") / "data"
    # Rotated small, to see rotation with a few hundred requests.
    args = ("--access-log", "json", "--access-log-max-bytes", "64Ki", "--access-log-backups", "2")
    running = Platform(data, args).start()
    try:
        yield running
        running.stop_cleanly()
    finally:
        running.abandon()


def access_lines(platform: Platform) -> list[dict[str, Any]]:
    path = platform.data_dir / "logs" / "access.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_requests_are_logged_counted_and_traced(logged: Platform, tmp_path: Path) -> None:
    source = write(tmp_path / "acc.py", SOURCE)
    logged.ok("fn", "create", "--name", "acc", "--code", str(source))
    logged.ok("route", "create", "--name", "acc-route", "--function", "acc", "--prefix", "/acc")

    sent = logged.get(
        "/acc/ok",
        headers={
            "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01",
            "tracestate": "vendor=x",
        },
    )
    assert sent.status_code == 200, sent.text
    seen = sent.json()
    version, trace, parent, flags = seen["traceparent"].split("-")
    assert (version, trace, flags) == ("00", CLIENT_TRACE, "01")
    assert parent != CLIENT_PARENT and len(parent) == 16
    assert seen["tracestate"] == "vendor=x"

    # No (or an invalid) traceparent: a new trace, still one the function receives.
    fresh = logged.get("/function/acc", headers={"traceparent": "00-zz-bad-01"}).json()
    assert fresh["traceparent"].split("-")[1] not in (CLIENT_TRACE, "zz")
    assert logged.get("/acc/missing").status_code == 404
    assert logged.get("/acc/boom").status_code == 500
    assert logged.get("/no/such/route").status_code == 404

    def logged_all() -> list[dict[str, Any]] | None:
        lines = access_lines(logged)
        return lines if len(lines) >= 5 else None

    lines = wait_for(logged_all, 10, "five access log lines")
    by_path = {line["path"]: line for line in lines}
    ok = by_path["/acc/ok"]
    assert ok["function"] == "acc" and ok["route"] == "acc-route"
    assert ok["status"] == 200 and ok["method"] == "GET"
    assert ok["trace_id"] == CLIENT_TRACE
    assert ok["client"] == "127.0.0.1"
    assert ok["instance"] and ok["invocation_id"]
    assert ok["bytes"] == len(sent.content)
    assert ok["duration_ms"] >= ok["queue_ms"] >= 0
    assert ok["time"].endswith("Z") and "T" in ok["time"]
    assert by_path["/function/acc"]["trace_id"] == fresh["traceparent"].split("-")[1]
    assert by_path["/function/acc"]["route"] is None
    assert by_path["/acc/missing"]["status"] == 404
    assert by_path["/acc/boom"]["status"] == 500
    missing = by_path["/no/such/route"]
    assert missing["status"] == 404 and missing["function"] is None

    # The first request waited for the function's first instance: a cold start.
    first = lines[0]
    assert first["path"] == "/acc/ok" and first["cold"] is True
    assert by_path["/acc/missing"]["cold"] is False

    shown = logged.ok("fn", "logs", "--name", "acc", "--requests").out
    rows = shown.splitlines()
    assert len(rows) == 4, shown
    assert " GET /acc/ok 200 " in rows[0] and f"trace={CLIENT_TRACE}" in rows[0]
    assert " /acc/boom 500 " in rows[3] and "fn=acc" in rows[3]

    api = logged.http.get(
        f"{logged.api_url}/v1/functions/acc/requests",
        params={"limit": 2},
        headers={"authorization": f"Bearer {token_of(logged)}"},
    )
    assert [r["path"] for r in api.json()] == ["/acc/missing", "/acc/boom"]


def test_the_log_rotates_at_the_size_asked_keeping_the_backups_asked(
    logged: Platform, tmp_path: Path
) -> None:
    source = write(tmp_path / "rot.py", "def main(): return 'r'\n")
    logged.ok("fn", "create", "--name", "rot", "--code", str(source))
    logs = logged.data_dir / "logs"
    for _ in range(800):  # ~330 bytes a line: four files' worth of 64 KiB
        assert logged.get("/function/rot").status_code == 200
    rotated = [logs / "access.log.1", logs / "access.log.2"]
    wait_for(lambda: all(path.exists() for path in rotated), 30, "two rotated access logs")
    assert not (logs / "access.log.3").exists()
    for path in [logs / "access.log", *rotated]:
        assert path.stat().st_size <= 64 * 1024
        for line in path.read_text().splitlines():
            json.loads(line)  # whole lines: a batch is never split between two files


def token_of(platform: Platform) -> str:
    return (platform.data_dir / "api-token").read_text().strip()


def test_off_writes_nothing_and_keeps_nothing(spawn: Spawn, tmp_path: Path) -> None:
    platform = spawn(None, "--access-log", "off", "--no-metrics")
    source = write(tmp_path / "quiet.py", "def main(): return 'quiet'\n")
    platform.ok("fn", "create", "--name", "quiet", "--code", str(source))
    assert platform.get("/function/quiet").text == "quiet"
    assert platform.ok("fn", "logs", "--name", "quiet", "--requests").out == ""
    assert not (platform.data_dir / "logs" / "access.log").exists()
