"""System level: the example's specs applied to a throw-away platform, called as the page's
script does it, from Python: POST to /async-function/long-task, a 202 at once, then the result
over the invocation's websocket. (The page itself in headless Chromium:
tests/system/test_async_browser.py.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.sync.client import connect

from fissile.testing import Platform

pytestmark = [pytest.mark.slow, pytest.mark.fissile_specs("../specs")]


def follow(ws_url: str) -> tuple[list[dict[str, Any]], int | None]:
    """Every message the invocation's websocket pushes, until the platform closes it."""
    with connect(ws_url, open_timeout=10, close_timeout=10) as socket:
        # Iteration ends when the platform closes the socket after the result.
        received = [json.loads(raw) for raw in socket]
        return received, socket.close_code


def test_async_call_then_result_over_the_websocket(fissile_platform_fn: Platform) -> None:
    platform = fissile_platform_fn
    page = platform.get("/async-demo")
    assert page.status_code == 200 and "Run the long task" in page.text

    accepted = platform.post("/async-function/long-task", json={"limit": 1000, "seconds": 0.5})
    assert accepted.status_code == 202, accepted.text
    document = accepted.json()
    assert accepted.headers["location"] == f"/invocations/{document['id']}"
    assert document["ws_url"].endswith(f"/invocations/{document['id']}/ws")

    received, close_code = follow(document["ws_url"])
    assert close_code == 1000
    events = [message["event"] for message in received]
    assert events[-1] == "result" and set(events[:-1]) <= {"status"}, events
    final = received[-1]["invocation"]
    assert final["status"] == "succeeded" and final["id"] == document["id"]
    answer = json.loads(final["response"]["body"])
    assert answer["limit"] == 1000 and answer["primes"] == 168 and answer["seconds"] >= 0.5
    # The result stays at result_url for a caller that was not listening.
    assert platform.get(f"/invocations/{document['id']}/result").json() == answer

    # A call the function refuses ends failed, with the function's own answer.
    refused = platform.post("/async-function/long-task", json={"limit": 1})
    received, _ = follow(refused.json()["ws_url"])
    final = received[-1]["invocation"]
    assert final["status"] == "failed" and final["response"]["status"] == 400
