"""``fissile top`` and ``fissile fn stats`` against a running platform: the table and the JSON
after some calls, a crash with its reason, a wrong window, and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from syskit import FISSILE, Platform, assert_one_line_error, wait_for, write

CODE = """
import os

def main(request):
    if request.body == b"crash":
        os._exit(1)
    return "hello " + request.body.decode()
"""


def api(platform: Platform, path: str) -> httpx.Response:
    token = (platform.data_dir / "api-token").read_text().strip()
    return platform.http.get(platform.api_url + path, headers={"authorization": f"Bearer {token}"})


def deploy(platform: Platform, tmp_path: Path, name: str) -> None:
    platform.ok("fn", "create", "--name", name, "--code", str(write(tmp_path / "top.py", CODE)))


def call(platform: Platform, name: str, times: int) -> None:
    for _ in range(times):
        response = platform.request("POST", f"/function/{name}", content=b"you")
        assert response.status_code == 200, response.text
        assert response.text == "hello you"


def table(out: str) -> dict[str, dict[str, str]]:
    """``fissile top --once``'s rows by function, each by column."""
    lines = out.splitlines()
    assert lines[0].startswith("fissile top"), out
    header = lines[2].split()
    assert header[0] == "FUNCTION", out
    return {line.split()[0]: dict(zip(header, line.split(), strict=True)) for line in lines[3:]}


def stats_json(platform: Platform, name: str, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        platform.ok("fn", "stats", "--name", name, *args, "-o", "json").out
    )
    return found


def test_top_once_lists_every_function_with_its_instances(
    platform: Platform, tmp_path: Path
) -> None:
    deploy(platform, tmp_path, "top-listed")
    call(platform, "top-listed", 3)
    result = platform.ok("top", "--once")
    rows = table(result.out)
    assert "top-listed" in rows, result
    row = rows["top-listed"]
    assert list(row) == [
        "FUNCTION",
        "REQ/S",
        "REQS",
        "ERR%",
        "P50",
        "P99",
        "WARM",
        "BUSY",
        "COLD",
        "QUEUE",
        "CRASHES",
    ]
    assert int(row["WARM"]) >= 1 and row["BUSY"] == "0" and row["QUEUE"] == "0", row
    assert row["ERR%"] == "0.0" and row["CRASHES"] == "0", row


def test_top_counts_the_requests_of_the_window(platform: Platform, tmp_path: Path) -> None:
    deploy(platform, tmp_path, "top-counted")
    call(platform, "top-counted", 5)
    row = table(platform.ok("top", "--once", "--since", "30s").out)["top-counted"]
    assert row["REQS"] == "5", row
    assert float(row["REQ/S"]) > 0 and row["P50"] != "-" and row["P99"] != "-", row
    assert row["COLD"] == "1", row


def test_fn_stats_json_has_the_window_and_the_instances(platform: Platform, tmp_path: Path) -> None:
    deploy(platform, tmp_path, "stats-json")
    call(platform, "stats-json", 2)
    stats = stats_json(platform, "stats-json", "--since", "1m")
    assert stats["function"] == "stats-json" and stats["since"] == 60
    assert 0 < stats["window"] <= 60
    assert stats["instances"]["ready"] >= 1
    [process] = [p for p in stats["processes"] if p["state"] == "ready"]
    assert process["pid"] > 1 and process["inflight"] == 0
    assert len(stats["series"]["rate"]) == len(stats["series"]["p99_ms"]) == 60
    assert stats["recent_crashes"] == []
    # The table says the same.
    text = platform.ok("fn", "stats", "--name", "stats-json").out
    assert "Window:      last 10m" in text and f"pid {process['pid']}" in text, text


def test_fn_stats_counts_statuses_and_latency(platform: Platform, tmp_path: Path) -> None:
    deploy(platform, tmp_path, "stats-counted")
    call(platform, "stats-counted", 4)
    stats = stats_json(platform, "stats-counted")
    assert stats["requests"] == 4 and stats["statuses"] == {"200": 4}
    assert stats["p50_ms"] > 0 and stats["p99_ms"] >= stats["p50_ms"]
    assert stats["error_rate"] == 0 and stats["cold_starts"] == 1


def test_a_crash_shows_with_its_reason(platform: Platform, tmp_path: Path) -> None:
    deploy(platform, tmp_path, "stats-crash")
    call(platform, "stats-crash", 1)
    crashed = platform.request("POST", "/function/stats-crash", content=b"crash")
    assert crashed.status_code == 502, crashed.text
    stats = wait_for(
        lambda: (s := stats_json(platform, "stats-crash"))["recent_crashes"] and s,
        15,
        "the crash in fn stats",
    )
    [crash] = stats["recent_crashes"]
    assert crash["reason"] == "exited with status 1" and crash["pid"] > 1, crash
    assert stats["restarts"] == 1 and stats["last_exit_reason"] == "exited with status 1"
    text = platform.ok("fn", "stats", "--name", "stats-crash").out
    assert "Recent crashes:" in text and "exited with status 1" in text, text


def test_a_crash_is_counted_in_the_window(platform: Platform, tmp_path: Path) -> None:
    deploy(platform, tmp_path, "top-crash-counted")
    call(platform, "top-crash-counted", 1)
    platform.request("POST", "/function/top-crash-counted", content=b"crash")
    row = wait_for(
        lambda: (
            (r := table(platform.ok("top", "--once").out)["top-crash-counted"])["CRASHES"] == "1"
            and r
        ),
        15,
        "the crash in fissile top",
    )
    assert float(row["ERR%"]) > 0, row


def test_a_wrong_window_is_one_line_naming_the_accepted_forms(platform: Platform) -> None:
    assert_one_line_error(platform.cli("top", "--once", "--since", "5x"), "30s, 10m or 1h")
    assert_one_line_error(platform.cli("fn", "stats", "--name", "x", "--since", "2h"), "1h")
    response = api(platform, "/v1/stats?since=forever")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid" and "30s, 10m or 1h" in error["message"]
    assert error["fields"][0]["path"] == "since"
    missing = api(platform, "/v1/functions/no-such-function/stats")
    assert missing.status_code == 404


def test_top_refreshes_until_ctrl_c(platform: Platform, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FISSILE_API": platform.api_url,
        "FISSILE_DATA_DIR": str(platform.data_dir),
    }
    output = tmp_path / "top.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [str(FISSILE), "top", "--interval", "0.2"],
            stdout=sink,
            stderr=subprocess.PIPE,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_for(
                lambda: output.read_text().count("fissile top") >= 2, 30, "two refreshes of top"
            )
            process.send_signal(signal.SIGINT)
            assert process.wait(10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.stderr is not None
    assert process.stderr.read() == b""
    assert "FUNCTION" in output.read_text()


def test_the_api_gives_every_function(platform: Platform, tmp_path: Path) -> None:
    deploy(platform, tmp_path, "stats-listed")
    started = time.monotonic()
    response = api(platform, "/v1/stats?since=30s&series=true")
    assert response.status_code == 200
    body = response.json()
    assert body["since"] == 30
    names = [f["function"] for f in body["functions"]]
    assert names == sorted(names) and "stats-listed" in names
    listed = next(f for f in body["functions"] if f["function"] == "stats-listed")
    assert listed["requests"] == 0 and listed["p99_ms"] is None and "series" in listed
    assert time.monotonic() - started < 5
