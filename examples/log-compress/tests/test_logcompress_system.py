"""System: the example's specs on a throw-away ``fissile up --sandbox off`` (so the function
sees a host directory), the hourly timer switched to every 2 seconds with the CLI, and the
directory's old logs gzipped by the timer's call; then the same run by hand, through the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fissile.testing import Platform

pytestmark = pytest.mark.slow  # a platform and a timer's first fires: ~10 s

SPECS = Path(__file__).resolve().parent.parent / "specs"


@pytest.fixture(scope="module")
def fissile_platform() -> Iterator[Platform]:
    # Host directories are visible only without the sandbox's private filesystem.
    with Platform(args=("--sandbox", "off")) as platform:
        platform.apply(SPECS)
        yield platform


def test_the_timer_compresses_the_directory(fissile_platform: Platform, log_dir: Path) -> None:
    timer = json.loads(
        fissile_platform.cli("timer", "get", "--name", "logcompress-hourly", "-o", "json").out
    )
    assert (timer["cron"], timer["status"]["next_fire"][14:]) == ("0 * * * *", "00:00Z")
    fissile_platform.cli(
        "fn", "update", "--name", "logcompress",
        "--env-var", f"LOG_DIR={log_dir}", "--env-var", "LOG_MIN_AGE=3600",
    )  # fmt: skip
    fissile_platform.cli(
        "timer", "update", "--name", "logcompress-hourly", "--cron", "*/2 * * * * *"
    )
    fissile_platform.wait_for(
        lambda: (log_dir / "app-1.log.gz").exists() and (log_dir / "app-2.log.gz").exists(),
        timeout=40,
        what="the timer's call gzipping the old logs",
    )
    fissile_platform.wait_for(
        lambda: "app-2.log: " in fissile_platform.logs("logcompress"),
        timeout=30,
        what="the function's log line",
    )
    assert (log_dir / "app.log").exists()  # still being written: left alone
    assert not (log_dir / "app-1.log").exists()


def test_a_run_by_hand_and_a_bad_directory(fissile_platform: Platform, tmp_path: Path) -> None:
    fissile_platform.cli("timer", "delete", "--name", "logcompress-hourly")
    fissile_platform.cli(
        "fn", "update", "--name", "logcompress", "--env-var", f"LOG_DIR={tmp_path / 'none'}"
    )
    failed = fissile_platform.call("logcompress", b"", method="POST")
    assert failed.status_code == 500
    assert "is not a directory this function can see" in failed.json()["error"]
    (tmp_path / "none").mkdir()
    done = fissile_platform.call("logcompress", b"", method="POST").json()
    assert (done["compressed"], done["left_alone"]) == ([], [])
