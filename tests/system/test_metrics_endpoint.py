"""The Prometheus exposition of a running platform (``GET /metrics`` on the control API): who
may read it, and that each family counts what happened through the CLI and HTTP.

Most tests use the shared platform, with their own function and trigger names (series are
labelled by them); build counts, shared by every test, are compared before and after.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from syskit import Platform, Spawn, wait_for, write
from trigkit import read_topic, unique

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]

STATUS = """
def main(request):
    return "status " + request.query.get("code", "200"), int(request.query.get("code", "200"))
"""

DIES = """
import os

def main(request):
    if request.query.get("die"):
        os._exit(7)
    if request.query.get("spin"):
        while True:
            pass
    return "alive"
"""

PICKY = """
def main(request):
    if request.body == b"bad":
        raise ValueError("bad message")
    return "ok"
"""


def token_of(platform: Platform) -> str:
    return (platform.data_dir / "api-token").read_text().strip()


def fetch(platform: Platform, token: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return platform.http.get(f"{platform.api_url}/metrics", headers=headers)


def scrape(platform: Platform) -> Series:
    """Every sample of the exposition: (name, sorted labels) -> value."""
    response = fetch(platform, token_of(platform))
    assert response.status_code == 200, response.text
    series: Series = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            series[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return series


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, tuple(sorted(labels.items()))), 0.0)


def eventually(
    platform: Platform, name: str, expected: float, timeout: float = 20, **labels: str
) -> Series:
    """Scrape until ``name{labels}`` is ``expected`` (counts land when calls end)."""

    def seen() -> Series | None:
        series = scrape(platform)
        return series if value(series, name, **labels) == expected else None

    try:
        found: Series = wait_for(seen, timeout, f"{name}{labels} == {expected}")
    except AssertionError:
        now = value(scrape(platform), name, **labels)
        raise AssertionError(f"{name}{labels} is {now}, not {expected}") from None
    return found


def test_metrics_need_the_token(platform: Platform) -> None:
    missing = fetch(platform)
    assert missing.status_code == 401
    assert fetch(platform, "not-the-token").status_code == 401
    response = fetch(platform, token_of(platform))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    # The supervisor's own process and Python metrics, and what version it is.
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= names
    assert "fissile_info" in names


def test_metrics_public_serves_metrics_but_nothing_else_without_the_token(spawn: Spawn) -> None:
    platform = spawn(None, "--metrics-public")
    response = fetch(platform)
    assert response.status_code == 200, response.text
    assert "fissile_info{" in response.text
    assert platform.http.get(f"{platform.api_url}/v1/info").status_code == 401


def test_requests_are_counted_by_status(platform: Platform, tmp_path: Path) -> None:
    name = "metrics-status"
    platform.ok("fn", "create", "--name", name, "--code", str(write(tmp_path / "s.py", STATUS)))
    calls = {"200": 3, "404": 2, "503": 1}
    for code, times in calls.items():
        for _ in range(times):
            assert platform.get(f"/function/{name}?code={code}").status_code == int(code)
    # Counted as each response is sent: a short wait is a generous one.
    series = eventually(
        platform, "fissile_function_requests_total", 1, 5, function=name, code="503"
    )
    for code, times in calls.items():
        assert value(series, "fissile_function_requests_total", function=name, code=code) == times
    assert value(series, "fissile_function_duration_seconds_count", function=name) == 6
    buckets = [
        v
        for (sample, labels), v in series.items()
        if sample == "fissile_function_duration_seconds_bucket" and ("function", name) in labels
    ]
    assert max(buckets) == 6


def test_crashes_are_counted_with_their_reason(platform: Platform, tmp_path: Path) -> None:
    name = "metrics-dies"
    platform.ok("fn", "create", "--name", name, "--code", str(write(tmp_path / "d.py", DIES)))
    assert platform.get(f"/function/{name}").text == "alive"
    series = scrape(platform)
    assert value(series, "fissile_function_instances", function=name, state="ready") == 1
    assert value(series, "fissile_function_crashes_total", function=name, reason="exited") == 0

    assert platform.get(f"/function/{name}?die=1").status_code == 502
    eventually(platform, "fissile_function_crashes_total", 1, function=name, reason="exited")
    assert platform.get(f"/function/{name}").text == "alive"
    series = scrape(platform)
    assert value(series, "fissile_function_instances", function=name, state="ready") == 1
    assert value(series, "fissile_function_timeouts_total", function=name) == 0


def test_a_function_that_cannot_load_counts_a_failed_start(
    platform: Platform, tmp_path: Path
) -> None:
    name = "metrics-broken"
    source = write(tmp_path / "broken.py", "import no_such_module_here\n")
    platform.ok("fn", "create", "--name", name, "--code", str(source))
    assert platform.get(f"/function/{name}").status_code == 500
    series = eventually(
        platform, "fissile_function_crashes_total", 1, function=name, reason="load_failed"
    )
    assert value(series, "fissile_function_instances", function=name, state="ready") == 0


def test_timeouts_are_counted_and_are_not_crashes(platform: Platform, tmp_path: Path) -> None:
    name = "metrics-spins"
    source = write(tmp_path / "spin.py", DIES)
    platform.ok("fn", "create", "--name", name, "--code", str(source), "--timeout", "1s")
    assert platform.get(f"/function/{name}?spin=1", timeout=30).status_code == 504
    series = eventually(platform, "fissile_function_timeouts_total", 1, function=name)
    crashes = [
        v
        for (sample, labels), v in series.items()
        if sample == "fissile_function_crashes_total" and ("function", name) in labels
    ]
    assert sum(crashes) == 0


def test_builds_are_counted(platform: Platform, tmp_path: Path) -> None:
    def builds() -> float:
        return sum(
            v
            for (sample, labels), v in scrape(platform).items()
            if sample == "fissile_builds_total" and ("environment", "python") in labels
        )

    before = builds()
    source = write(tmp_path / "built.py", f"def main(request):\n    return {time.time()!r}\n")
    platform.ok("fn", "create", "--name", "metrics-built", "--code", str(source))
    wait_for(lambda: builds() > before, 30, "a build counted")
    series = scrape(platform)
    assert value(series, "fissile_build_duration_seconds_count", environment="python") >= 1


def test_timer_fires_and_next_fire_are_exposed(platform: Platform, tmp_path: Path) -> None:
    source = write(tmp_path / "tick.py", "def main(request):\n    return 'tick'\n")
    platform.ok("fn", "create", "--name", "metrics-tick", "--code", str(source))
    timer = unique("metrics-timer")
    platform.ok(
        "timer", "create", "--name", timer, "--function", "metrics-tick", "--cron", "* * * * * *"
    )
    try:

        def fired_twice() -> Series | None:
            series = scrape(platform)
            fired = value(series, "fissile_timer_fires_total", trigger=timer, outcome="succeeded")
            return series if fired >= 2 else None

        series = wait_for(fired_twice, 20, "two timer runs counted")
        upcoming = value(series, "fissile_timer_next_fire_timestamp_seconds", trigger=timer)
        assert time.time() - 2 < upcoming < time.time() + 3, upcoming
    finally:
        platform.ok("timer", "delete", "--name", timer)
    assert (
        value(scrape(platform), "fissile_timer_fires_total", trigger=timer, outcome="succeeded")
        == 0
    )


def test_mq_outcomes_and_lag_on_the_embedded_broker(platform: Platform, tmp_path: Path) -> None:
    source = write(tmp_path / "picky.py", PICKY)
    platform.ok("fn", "create", "--name", "metrics-picky", "--code", str(source))
    trigger, topic, errors = unique("metrics-mqt"), unique("in"), unique("err")
    platform.ok(
        "mqt", "create", "--name", trigger, "--function", "metrics-picky", "--topic", topic,
        "--errortopic", errors, "--maxretries", "1",
    )  # fmt: skip
    try:
        for body in ("good", "bad", "good"):
            platform.ok("topic", "publish", "--topic", topic, "--body", body)
        read_topic("embedded", errors, 1, data_dir=platform.data_dir)
        series = eventually(
            platform, "fissile_mq_messages_total", 2, trigger=trigger, outcome="succeeded"
        )
        outcomes = {
            outcome: value(series, "fissile_mq_messages_total", trigger=trigger, outcome=outcome)
            for outcome in ("retried", "dead_lettered", "dropped")
        }
        assert outcomes == {"retried": 1, "dead_lettered": 1, "dropped": 0}
        eventually(platform, "fissile_mq_lag", 0, trigger=trigger)
        assert ("fissile_mq_lag", (("trigger", trigger),)) in scrape(platform)
    finally:
        platform.ok("mqt", "delete", "--name", trigger)


def test_async_invocations_by_status_and_attempts(platform: Platform, tmp_path: Path) -> None:
    name = "metrics-async"
    platform.ok("fn", "create", "--name", name, "--code", str(write(tmp_path / "a.py", STATUS)))
    for code in ("200", "200", "404"):
        response = platform.request("POST", f"/async-function/{name}?code={code}")
        assert response.status_code == 202, response.text
    series = eventually(platform, "fissile_invocations", 2, function=name, status="succeeded")
    series = eventually(platform, "fissile_invocations", 1, function=name, status="failed")
    assert value(series, "fissile_invocations", function=name, status="queued") == 0
    attempts = {
        outcome: value(series, "fissile_invocation_attempts_total", function=name, outcome=outcome)
        for outcome in ("succeeded", "failed")
    }
    assert attempts == {"succeeded": 2, "failed": 1}


def test_a_deleted_functions_series_end(platform: Platform, tmp_path: Path) -> None:
    name = "metrics-gone"
    platform.ok("fn", "create", "--name", name, "--code", str(write(tmp_path / "g.py", DIES)))
    assert platform.get(f"/function/{name}").text == "alive"
    assert platform.get(f"/function/{name}?die=1").status_code == 502
    eventually(platform, "fissile_function_crashes_total", 1, function=name, reason="exited")
    platform.ok("fn", "delete", "--name", name)
    series = scrape(platform)
    assert not [labels for _, labels in series if ("function", name) in labels]
