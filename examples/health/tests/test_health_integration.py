"""Integration level: each function in a real instance subprocess, the checker's URL targets
answered by a real HTTP server in the test (one healthy path, one failing)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fissile.testing import local_instance

EXAMPLE = Path(__file__).resolve().parent.parent


class Service(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.path == "/healthz" else 503
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Service)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_checker_in_an_instance(service: str) -> None:
    env = {"HEALTH_TARGETS": f"fn:api,{service}/healthz,{service}/broken", "HEALTH_TIMEOUT": "5"}
    with local_instance(
        EXAMPLE / "health_check.py", env=env, replies={"api": {"status": "ok"}}
    ) as instance:
        answer = instance.post("/")
        assert answer.status == 200, answer.text
        report = answer.json()
        assert [(r["target"], r["ok"], r["status"]) for r in report["results"]] == [
            ("fn:api", True, 200),
            (f"{service}/healthz", True, 200),
            (f"{service}/broken", False, 503),
        ]
        assert report["results"][2]["error"] == "HTTP 503"
        # What the instance asked its platform for: one call, one report on the topic.
        assert [i.function for i in instance.invocations] == ["api"]
        assert [(p.topic, p.json()) for p in instance.published] == [("health-reports", report)]


def test_the_consumer_in_an_instance() -> None:
    report = {
        "run": "r7",
        "healthy": 0,
        "unhealthy": 1,
        "results": [{"target": "fn:db", "ok": False, "status": None, "error": "refused"}],
    }
    with local_instance(EXAMPLE / "health_alerts.py") as instance:
        answer = instance.post("/", json=report)
        assert answer.json()["alerts"] == [
            {"run": "r7", "target": "fn:db", "status": None, "error": "refused"}
        ]
        refused = instance.post("/", json=[1, 2])
        assert refused.status == 500
        assert "not a health report" in refused.text
        assert "ALERT fn:db is down (None): refused" in instance.output()
