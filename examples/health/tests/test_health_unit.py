"""Unit level: the checker and the alerting consumer as function objects; the checker's
``context.invoke`` answers from scripted replies, its ``publish`` is recorded."""

from __future__ import annotations

import socket

import health_alerts
import health_check
import pytest

from fissile.runtime.context import PlatformError
from fissile.testing import Invocation, call, make_context, make_request


def closed_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def unreachable(invocation: Invocation) -> None:
    raise PlatformError("platform socket: connection refused")


def test_every_target_is_checked_and_one_report_published(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    down = closed_url()
    targets = ["fn:up", "fn:broken", "fn:gone", "fn:cut-off", down, "ftp://nope"]
    monkeypatch.setenv("HEALTH_TARGETS", ",".join(targets))
    monkeypatch.setenv("HEALTH_TOPIC", "reports")
    context = make_context(
        "health-check",
        replies={"up": {"status": "ok"}, "broken": (503, "database down"), "cut-off": unreachable},
    )
    request = make_request("POST", "/", headers={"X-Fissile-Timer-Slot": "2026-01-01T00:00:00Z"})

    result = call(health_check.main, request, context)

    assert result.status == 200
    report = result.json()
    assert report["run"] == "2026-01-01T00:00:00Z"
    assert (report["healthy"], report["unhealthy"]) == (1, 5)
    outcomes = {r["target"]: (r["ok"], r["status"]) for r in report["results"]}
    assert outcomes == {
        "fn:up": (True, 200),
        "fn:broken": (False, 503),
        "fn:gone": (False, 404),
        "fn:cut-off": (False, None),
        down: (False, None),
        "ftp://nope": (False, None),
    }
    errors = {r["target"]: r["error"] for r in report["results"]}
    assert errors["fn:broken"] == "database down"
    assert "function_not_found" in errors["fn:gone"]
    assert errors["fn:cut-off"] == "platform: platform socket: connection refused"
    assert "refused" in errors[down].lower()
    assert errors["ftp://nope"] == "not a target: use fn:NAME or a URL"
    assert all(r["latency_ms"] >= 0 for r in report["results"])
    # The functions were called as the platform would be asked to, and one report published.
    assert [i.function for i in context.invocations] == ["up", "broken", "gone", "cut-off"]
    assert [(p.topic, p.json()) for p in context.published] == [("reports", report)]


def test_no_targets_is_an_error_not_an_empty_report(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTH_TARGETS", " , ")
    context = make_context("health-check")
    result = call(health_check.main, make_request("POST", "/"), context)
    assert (result.status, result.json()) == (500, {"error": "HEALTH_TARGETS names no target"})
    assert context.published == []


REPORT = {
    "run": "r1",
    "healthy": 1,
    "unhealthy": 1,
    "results": [
        {"target": "fn:a", "ok": True, "status": 200, "error": None, "latency_ms": 1.0},
        {"target": "fn:b", "ok": False, "status": 404, "error": "gone", "latency_ms": 2.0},
    ],
}


def test_alerts_for_the_unhealthy_results_only() -> None:
    context = make_context("health-alerts")
    result = call(health_alerts.main, make_request("POST", "/", json=REPORT), context)
    assert result.json() == {
        "run": "r1",
        "alerts": [{"run": "r1", "target": "fn:b", "status": 404, "error": "gone"}],
    }
    assert context.messages == ["ALERT fn:b is down (404): gone", "run r1: 1 healthy, 1 down"]
    assert [record.levelname for record in context.logs] == ["WARNING", "INFO"]


def test_a_message_that_is_not_a_report_fails() -> None:
    request = make_request("POST", "/", json={"hello": 1})
    with pytest.raises(ValueError, match="not a health report"):
        call(health_alerts.main, request, make_context("health-alerts"))
    failed = call(health_alerts.main, request, make_context("health-alerts"), raise_errors=False)
    assert failed.status == 500
