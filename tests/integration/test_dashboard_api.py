"""Live statistics and the dashboard in the control API, assembled as fissile/platform.py does
it on a real store and executor, driven over ASGI. Request counts are filled into the
function's ``FunctionMetrics`` by hand (the router's counting is another part's)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from intkit import Harness

import fissile
from fissile.builder import ArchiveStore, Builder
from fissile.controlplane import Resources, create_api
from fissile.controlplane.auth import SESSION_COOKIE, session_of
from fissile.events import EventBus
from fissile.models import PlatformInfo
from fissile.observability.crashes import CrashLog
from fissile.observability.stats import Stats, pool_gauges

TOKEN = "s3cret"
HELLO = "def main(request):\n    return 'hello'\n"
BEARER = {"authorization": f"Bearer {TOKEN}"}

Client = Callable[..., Any]


@pytest.fixture
async def make(harness: Harness, tmp_path: Path) -> AsyncIterator[Client]:
    """``make(token=TOKEN)``: an ASGI client of a control API with stats, crashes and the
    dashboard, as the platform makes it."""
    archives = ArchiveStore(harness.root / "archives")
    builder = Builder(harness.store, archives, harness.deploy_root)
    resources = Resources(harness.store, builder, archives, harness.executor, harness.logs)
    info = PlatformInfo(
        version=fissile.__version__, router_url="http://127.0.0.1:1", data_dir=str(tmp_path)
    )
    stats = Stats(harness.executor.metrics, pool_gauges(lambda: harness.executor.functions))
    events = EventBus()
    crashes = CrashLog()
    crashes.follow(events)
    clients: list[httpx.AsyncClient] = []

    def client(token: str | None = TOKEN) -> httpx.AsyncClient:
        app = create_api(
            resources, harness.logs, info, lambda: True, token=token, stats=stats, crashes=crashes
        )
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        made = httpx.AsyncClient(transport=transport, base_url="http://api")
        clients.append(made)
        return made

    client.events = events  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        for made in clients:
            await made.aclose()
        await builder.stop()


async def test_stats_of_every_function_and_of_one(make: Client, harness: Harness) -> None:
    harness.function("counted", HELLO)
    harness.function("quiet", HELLO)
    metrics = harness.executor.metrics.function("counted")
    for status, seconds in ((200, 0.004), (200, 0.004), (200, 0.004), (502, 0.3)):
        metrics.request(status, seconds)
    client = make()
    response = await client.get("/v1/stats", params={"since": "30s"}, headers=BEARER)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["since"] == 30
    assert [f["function"] for f in body["functions"]] == ["counted", "quiet"]
    counted, quiet = body["functions"]
    assert counted["requests"] == 4 and counted["statuses"] == {"200": 3, "502": 1}
    assert counted["error_rate"] == 0.25
    assert 2.5 < counted["p50_ms"] <= 5 and 250 < counted["p99_ms"] <= 500
    assert counted["instances"]["ready"] == 0 and counted["queued"] == 0
    assert "series" not in counted
    assert quiet["requests"] == 0 and quiet["p50_ms"] is None

    one = (await client.get("/v1/functions/counted/stats", headers=BEARER)).json()
    assert one["since"] == 600 and one["requests"] == 4
    assert len(one["series"]["rate"]) == 60 and one["recent_crashes"] == []


async def test_a_wrong_window_is_a_422_naming_the_accepted_forms(make: Client) -> None:
    client = make()
    for since in ("10", "5x", "0s", "2h"):
        response = await client.get("/v1/stats", params={"since": since}, headers=BEARER)
        assert response.status_code == 422, since
        error = response.json()["error"]
        assert error["code"] == "invalid" and error["fields"][0]["path"] == "since"
        assert "30s" in error["message"] or "at most 1h" in error["message"], error
    missing = await client.get("/v1/functions/ghost/stats", headers=BEARER)
    assert missing.status_code == 404


async def test_a_single_node_gathers_nothing_and_has_no_node_to_name(
    make: Client, harness: Harness
) -> None:
    harness.function("alone", HELLO)
    client = make()
    body = (await client.get("/v1/stats", headers=BEARER)).json()
    one = (await client.get("/v1/functions/alone/stats", headers=BEARER)).json()
    # The cluster's fields (cluster/stats.py) are not there: the answer is the node's own.
    for document in (body, body["functions"][0], one):
        assert "nodes" not in document and "warnings" not in document
    for path in ("/v1/stats", "/v1/functions/alone/stats"):
        response = await client.get(path, params={"node": "n1"}, headers=BEARER)
        assert response.status_code == 404, response.text
        assert "not a cluster" in response.json()["error"]["message"]


async def test_recent_crashes_come_from_the_event_bus(make: Client, harness: Harness) -> None:
    harness.function("crashy", HELLO)
    client = make()
    events = make.events  # type: ignore[attr-defined]
    for pid in (101, 102):
        events.publish(
            "instance.crashed",
            {"function": "crashy", "instance": f"i{pid}", "pid": pid, "reason": "exited"},
        )
    crashes = (await client.get("/v1/functions/crashy/stats", headers=BEARER)).json()
    assert [c["pid"] for c in crashes["recent_crashes"]] == [102, 101]  # newest first
    # A function deleted (and made again) starts with no crash.
    events.publish("function.deleted", {"function": "crashy"})
    again = (await client.get("/v1/functions/crashy/stats", headers=BEARER)).json()
    assert again["recent_crashes"] == []


async def test_the_dashboard_asks_for_the_token_and_keeps_a_session(
    make: Client, harness: Harness
) -> None:
    harness.function("shown", HELLO)
    client = make()
    assert (await client.get("/v1/stats")).status_code == 401
    first = await client.get("/ui")
    assert first.status_code == 303 and first.headers["location"] == "/ui/login"
    assert (await client.get("/ui/static/ui.js")).status_code == 200  # no secret in it

    wrong = await client.post("/ui/login", data={"token": "nope"})
    assert wrong.status_code == 401 and "wrong token" in wrong.text
    right = await client.post("/ui/login", data={"token": TOKEN})
    assert right.status_code == 303
    assert client.cookies[SESSION_COOKIE] == session_of(TOKEN) != TOKEN

    page = await client.get("/ui")
    assert page.status_code == 200
    assert 'data-function="shown"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script>" not in page.text  # the policy allows no inline script
    function = await client.get("/ui/functions/shown")
    assert function.status_code == 200 and 'id="invoke-form"' in function.text
    assert (await client.get("/ui/functions/ghost")).status_code == 404
    for path in ("/ui/triggers", "/ui/invocations"):
        assert (await client.get(path)).status_code == 200, path
    assert (await client.get("/ui/invocations/nope")).status_code == 404

    # With the cookie: reads, but no other write than a page's invoke.
    assert (await client.get("/v1/functions/shown/stats")).status_code == 200
    assert (await client.delete("/v1/functions/shown")).status_code == 401
    out = await client.post("/ui/logout")
    assert out.status_code == 303 and SESSION_COOKIE not in client.cookies
    assert (await client.get("/ui")).status_code == 303


async def test_without_a_token_the_dashboard_is_as_open_as_the_api(
    make: Client, harness: Harness
) -> None:
    harness.function("open", HELLO)
    client = make(token=None)
    assert (await client.get("/v1/stats")).status_code == 200
    page = await client.get("/ui")
    assert page.status_code == 200 and 'data-function="open"' in page.text
    assert "Sign out" not in page.text
    login = await client.get("/ui/login")
    assert login.status_code == 303 and login.headers["location"] == "/ui"
