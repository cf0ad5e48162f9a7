"""System level: the example on a throw-away platform with its timer on a seconds cron. Each
run checks the targets and publishes a report; the MQ trigger turns the report into alerts on
the response topic, and the consumer logs them."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from fissile.testing import Platform

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parent.parent


def project_for(tmp_path: Path, router_url: str) -> Path:
    """The example, copied, with its timer every two seconds and its URL target on this
    platform's router."""
    project = tmp_path / "health"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    path = project / "specs" / "health.yaml"
    documents = list(yaml.safe_load_all(path.read_text()))
    for document in documents:
        if document["kind"] == "TimeTrigger":
            document["cron"] = "*/2 * * * * *"
        elif document["name"] == "health-check":
            targets = document["env_vars"]["HEALTH_TARGETS"].split(",")
            document["env_vars"]["HEALTH_TARGETS"] = ",".join(
                t.replace("http://127.0.0.1:8080", router_url) for t in targets
            )
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return project


def consume(platform: Platform, topic: str, seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answer = platform.cli("topic", "consume", "--topic", topic, "--count", "50", "--wait", "1s")
    seen += [json.loads(line) for line in answer.out.splitlines()]
    return seen


def test_timer_reports_and_alerts(fissile_platform_fn: Platform, tmp_path: Path) -> None:
    platform = fissile_platform_fn
    platform.apply(project_for(tmp_path, platform.router_url) / "specs")

    reports: list[dict[str, Any]] = []
    platform.wait_for(
        lambda: len({r["run"] for r in consume(platform, "health-reports", reports)}) >= 2,
        timeout=45,
        what="two timer runs' reports on health-reports",
    )
    for report in reports:
        outcomes = {r["target"]: r["ok"] for r in report["results"]}
        assert outcomes == {
            "fn:demo-service": True,
            "fn:retired-service": False,
            f"{platform.router_url}/demo": True,
        }, report
        assert (report["healthy"], report["unhealthy"]) == (2, 1)
        # The run is the timer's slot: an even second, as the seconds cron says.
        assert datetime.fromisoformat(report["run"]).second % 2 == 0, report["run"]

    alerts: list[dict[str, Any]] = []
    platform.wait_for(
        lambda: (
            {r["run"] for r in reports}
            <= {a["run"] for a in consume(platform, "health-alerts", alerts)}
        ),
        timeout=30,
        what="the alerts of those runs on health-alerts",
    )
    for answer in alerts:
        assert [(a["target"], a["status"]) for a in answer["alerts"]] == [
            ("fn:retired-service", 404)
        ]
    platform.wait_for(
        lambda: "ALERT fn:retired-service is down (404)" in platform.logs("health-alerts"),
        what="the consumer's alert in its log",
    )
    timer = json.loads(
        platform.cli("timer", "get", "--name", "health-every-minute", "-o", "json").out
    )
    assert timer["cron"] == "*/2 * * * * *", timer
