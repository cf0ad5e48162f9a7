"""Unit: the function object on a directory of the test's own."""

from __future__ import annotations

import gzip
from pathlib import Path

import logcompress
import pytest

from fissile.testing import call, make_context, make_request


@pytest.fixture(autouse=True)
def settings(log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_DIR", str(log_dir))
    monkeypatch.delenv("LOG_PATTERN", raising=False)
    monkeypatch.delenv("LOG_MIN_AGE", raising=False)


def test_old_logs_are_gzipped_the_live_one_is_left_alone(log_dir: Path) -> None:
    before = {p.name: p.read_bytes() for p in log_dir.glob("*.log")}
    mtime = (log_dir / "app-1.log").stat().st_mtime
    context = make_context("logcompress")

    result = call(logcompress.main, make_request("POST", "/"), context)

    assert result.status == 200
    summary = result.json()
    assert summary["compressed"] == ["app-1.log", "app-2.log"]
    assert summary["left_alone"] == ["app.log"]
    assert summary["bytes_before"] == len(before["app-1.log"]) + len(before["app-2.log"])
    assert 0 < summary["bytes_after"] < summary["bytes_before"] / 4
    assert sorted(p.name for p in log_dir.iterdir()) == [
        "app-0.log.gz",
        "app-1.log.gz",
        "app-2.log.gz",
        "app.log",
    ]
    assert gzip.decompress((log_dir / "app-1.log.gz").read_bytes()) == before["app-1.log"]
    assert (log_dir / "app-1.log.gz").stat().st_mtime == mtime
    assert context.messages[0].startswith("app-1.log: ")


def test_a_second_run_has_nothing_to_do(log_dir: Path) -> None:
    call(logcompress.main, make_request("POST", "/"), make_context())
    again = call(logcompress.main, make_request("POST", "/"), make_context()).json()
    assert (again["compressed"], again["bytes_before"]) == ([], 0)


def test_pattern_and_age_come_from_the_environment(
    log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_PATTERN", "app-2.*")
    monkeypatch.setenv("LOG_MIN_AGE", "0")
    assert call(logcompress.main, make_request("POST", "/"), make_context()).json()[
        "compressed"
    ] == ["app-2.log"]


def test_a_directory_it_cannot_see_is_a_clear_500(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_DIR", "/no/such/dir")
    result = call(logcompress.main, make_request("POST", "/"), make_context())
    assert result.status == 500
    assert result.json()["error"].startswith("LOG_DIR /no/such/dir is not a directory this")
    monkeypatch.delenv("LOG_DIR")
    unset = call(logcompress.main, make_request("POST", "/"), make_context())
    assert unset.json()["error"].startswith("LOG_DIR is not set")


def test_a_file_that_cannot_be_compressed_is_logged_and_left(log_dir: Path) -> None:
    (log_dir / "app-2.log.gz").mkdir()  # its .gz name is taken by a directory
    context = make_context()
    summary = call(logcompress.main, make_request("POST", "/"), context).json()
    assert summary["compressed"] == ["app-1.log"]
    assert (log_dir / "app-2.log").exists()
    assert not list(log_dir.glob(".*partial"))
    assert any(m.startswith("app-2.log: not compressed: ") for m in context.messages)
