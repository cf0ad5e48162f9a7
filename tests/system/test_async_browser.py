"""examples/async-browser in a real browser: the example's specs applied to a running platform,
its page opened in headless Chromium (driven by Playwright), the button clicked; the page must
show the 202 and the invocation's id first, then each status and the result pushed over the
invocation's websocket.

Needs Debian's ``chromium`` and the ``playwright`` package (the test extra); skipped without
them, failed without them when CI=true. Playwright only drives the system's Chromium: it never
downloads a browser of its own.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from syskit import Platform

pytestmark = pytest.mark.slow  # a browser start and a 1.5 s task: about 5 s

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "async-browser"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The example's long task with its defaults: primes below 200 000, in about 1.5 s.
PRIMES_BELOW_200000 = 17984
TASK_SECONDS = 1.5


def missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)


def chromium_path() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if found is None:
        missing("chromium is not installed (apt-get install chromium)")
    assert found is not None
    return found


@pytest.fixture
def deployed(platform: Platform) -> Iterator[Platform]:
    """The example applied from its own spec directory, and destroyed afterwards."""
    specs = str(EXAMPLE / "specs")
    applied = platform.ok("spec", "apply", "--wait", "--dir", specs)
    assert applied.out.strip().splitlines()[-1] == "5 created, 0 updated, 0 deleted, 0 unchanged"
    try:
        yield platform
    finally:
        platform.ok("spec", "destroy", "--dir", specs)


def test_page_shows_202_then_statuses_and_result_over_the_websocket(
    deployed: Platform, tmp_path: Path
) -> None:
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package is not installed (make install-test)")

    page_url = f"{deployed.router_url}/async-demo"
    served = deployed.get("/async-demo")
    assert served.status_code == 200, served.text
    assert served.headers["content-type"] == "text/html; charset=utf-8"

    sockets: list[Any] = []
    frames: list[str] = []
    problems: list[str] = []
    with sync_playwright() as playwright:
        # A persistent context is Playwright's way of taking a --user-data-dir of our own.
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
        )
        try:
            page = context.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on(
                "console",
                lambda message: (
                    problems.append(f"console: {message.text}") if message.type == "error" else None
                ),
            )

            def opened(socket: Any) -> None:
                sockets.append(socket)
                socket.on("framereceived", lambda payload: frames.append(payload))

            page.on("websocket", opened)
            page.goto(page_url)
            assert page.text_content("#accepted") == "nothing sent yet"

            page.click("#run")
            page.wait_for_function("window.demo.transport !== null || window.demo.error !== null")
            demo: dict[str, Any] = page.evaluate("window.demo")
            accepted_text = page.text_content("#accepted")
            result_text = page.text_content("#result")
            statuses = page.eval_on_selector_all(
                "#statuses li", "items => items.map(i => i.dataset.status)"
            )
            shown_primes = page.get_attribute("#result", "data-primes")
            raw = page.text_content("#raw")
            # The server closes the socket (1000) right after the result.
            page.wait_for_function("document.getElementById('run').disabled === false")
            closed = [socket.is_closed() for socket in sockets]
        finally:
            context.close()

    assert demo["error"] is None, demo
    assert problems == []

    # First the 202 with the id, as the page shows it.
    accepted = demo["accepted"]
    invocation_id = accepted["id"]
    assert accepted["status"] == 202
    assert accepted["location"] == f"/invocations/{invocation_id}"
    assert accepted_text == f"202 Accepted: invocation {invocation_id}"

    # Then the websocket named in the 202: the browser opened exactly that one.
    assert demo["wsUrl"] == f"ws://127.0.0.1:{deployed.port}/invocations/{invocation_id}/ws"
    assert [socket.url for socket in sockets] == [demo["wsUrl"]]
    assert closed == [True]
    received = [json.loads(frame) for frame in frames]
    assert received == demo["messages"]
    events = [message["event"] for message in received]
    assert events[-1] == "result" and set(events[:-1]) <= {"status"}, events
    assert all(message["invocation"]["id"] == invocation_id for message in received)
    assert statuses == [message["invocation"]["status"] for message in received]
    assert statuses[-1] == "succeeded"
    assert set(statuses[:-1]) <= {"queued", "running"}, statuses

    # The 202 came back at once; the result only when the task was done, seconds later.
    times = demo["times"]
    assert accepted["at"] <= times[0] <= times[-1]
    assert (times[-1] - accepted["at"]) / 1000 >= TASK_SECONDS * 0.9, (accepted, times)

    # The result the page rendered is the function's answer, as the platform recorded it.
    assert demo["transport"] == "websocket"
    assert shown_primes == str(PRIMES_BELOW_200000)
    assert result_text is not None and result_text.startswith(
        f"{PRIMES_BELOW_200000} primes below 200000, computed in "
    )
    answer = json.loads(raw or "")
    assert answer["primes"] == PRIMES_BELOW_200000 and answer["seconds"] >= TASK_SECONDS
    stored = deployed.get(f"/invocations/{invocation_id}/result")
    assert stored.status_code == 200
    assert stored.headers["x-fissile-invocation-status"] == "succeeded"
    assert stored.json() == answer
