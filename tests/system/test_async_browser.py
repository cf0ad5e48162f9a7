"""examples/long-task in a real browser: the example's specs applied to a running platform,
its page opened in headless Chromium (driven by Playwright), its buttons clicked. The page must
show the 202 and the invocation's id first, then each status and the result pushed over the
invocation's websocket; a cancel and a failing call end the same way, with their status.

The browser tests need Debian's ``chromium`` and the ``playwright`` package (the test extra);
they are skipped without them, failed without them when CI=true. Playwright only drives the
system's Chromium: it never downloads a browser of its own. The example's own tests
(examples/long-task/tests) do what the page's script does from Python, so the example is checked
everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from syskit import Platform, error_of

# The browser tests are slow (marked each): one browser, a 1.5 s task, a cancel and a failure,
# about 6 s together.

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "long-task"
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
DONE = "window.demo.transport !== null || window.demo.error !== null"


def missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)


def chromium_path() -> str:
    found = shutil.which("chromium")
    if found is None and Path("/usr/bin/chromium").exists():
        found = "/usr/bin/chromium"
    if found is None:
        missing("chromium is not installed (apt-get install chromium)")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def deployed(platform: Platform) -> Iterator[Platform]:
    """The example applied from its own spec directory, and destroyed afterwards."""
    specs = str(EXAMPLE / "specs")
    applied = platform.ok("spec", "apply", "--wait", "--dir", specs)
    assert applied.out.strip().splitlines()[-1] == "5 created, 0 updated, 0 deleted, 0 unchanged"
    try:
        yield platform
    finally:
        destroyed = platform.ok("spec", "destroy", "--dir", specs)
        assert "async-page" in destroyed.out, destroyed


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium") / "profile") as context:
        yield context


@contextmanager
def chromium(profile: Path, **options: Any) -> Iterator[Any]:
    """Headless Chromium with a fresh profile (a persistent context is Playwright's way of
    taking a --user-data-dir of our own); ``options`` go to Playwright (a viewport...)."""
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package is not installed (make install-test)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            **options,
        )
        try:
            yield context
        finally:
            context.close()


@dataclass
class DemoPage:
    """The example's page in a new tab, with what the browser itself saw: the websockets it
    opened, the frames they received, and any page error or console error."""

    page: Any
    sockets: list[Any] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("console", self._console)
        self.page.on("websocket", self._opened)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.problems.append(f"console: {message.text}")

    def _opened(self, socket: Any) -> None:
        self.sockets.append(socket)
        socket.on("framereceived", lambda payload: self.frames.append(payload))

    def demo(self) -> dict[str, Any]:
        found: dict[str, Any] = self.page.evaluate("window.demo")
        return found

    def text(self, selector: str) -> str:
        return str(self.page.text_content(selector))

    def statuses(self) -> list[str]:
        shown: list[str] = self.page.eval_on_selector_all(
            "#statuses li", "items => items.map(i => i.dataset.status)"
        )
        return shown

    def finish(self) -> dict[str, Any]:
        """Wait for the result (or an error) and for the server to close the websocket."""
        self.page.wait_for_function(DONE)
        self.page.wait_for_function("document.getElementById('run').disabled === false")
        return self.demo()

    def received(self) -> list[dict[str, Any]]:
        return [json.loads(frame) for frame in self.frames]


@pytest.fixture
def page(deployed: Platform, browser: Any) -> Iterator[DemoPage]:
    tab = DemoPage(browser.new_page())
    try:
        tab.page.goto(f"{deployed.router_url}/async-demo")
        assert tab.text("#accepted") == "nothing sent yet"
        yield tab
    finally:
        tab.page.close()


def check_accepted(demo: dict[str, Any], page: DemoPage, platform: Platform) -> str:
    """The 202, as the page shows it, and the one websocket the browser opened: its ws_url."""
    accepted = demo["accepted"]
    invocation_id: str = accepted["id"]
    assert accepted["status"] == 202
    assert accepted["location"] == f"/invocations/{invocation_id}"
    assert page.text("#accepted") == f"202 Accepted: invocation {invocation_id}"
    assert demo["wsUrl"] == f"ws://127.0.0.1:{platform.port}/invocations/{invocation_id}/ws"
    assert [socket.url for socket in page.sockets] == [demo["wsUrl"]]
    assert [socket.is_closed() for socket in page.sockets] == [True]
    received = page.received()
    assert received == demo["messages"]
    assert all(message["invocation"]["id"] == invocation_id for message in received)
    events = [message["event"] for message in received]
    assert events[-1] == "result" and set(events[:-1]) <= {"status"}, events
    assert page.statuses() == [message["invocation"]["status"] for message in received]
    assert set(page.statuses()[:-1]) <= {"queued", "running"}, page.statuses()
    assert demo["transport"] == "websocket" and demo["error"] is None, demo
    assert page.problems == []
    return invocation_id


@pytest.mark.slow
def test_page_shows_202_then_statuses_and_result_over_the_websocket(
    deployed: Platform, page: DemoPage
) -> None:
    served = deployed.get("/async-demo")
    assert served.status_code == 200, served.text
    assert served.headers["content-type"] == "text/html; charset=utf-8"

    page.page.click("#run")
    demo = page.finish()
    invocation_id = check_accepted(demo, page, deployed)
    assert page.statuses()[-1] == "succeeded"

    # The 202 came back at once; the result only when the task was done, seconds later.
    times = demo["times"]
    assert demo["accepted"]["at"] <= times[0] <= times[-1]
    assert (times[-1] - demo["accepted"]["at"]) / 1000 >= TASK_SECONDS * 0.9, demo

    # The result the page rendered is the function's answer, as the platform recorded it.
    assert page.page.get_attribute("#result", "data-primes") == str(PRIMES_BELOW_200000)
    assert page.text("#result").startswith(
        f"{PRIMES_BELOW_200000} primes below 200000, computed in "
    )
    answer = json.loads(page.text("#raw"))
    assert answer["primes"] == PRIMES_BELOW_200000 and answer["seconds"] >= TASK_SECONDS
    stored = deployed.get(f"/invocations/{invocation_id}/result")
    assert stored.status_code == 200
    assert stored.headers["x-fissile-invocation-status"] == "succeeded"
    assert stored.json() == answer


@pytest.mark.slow
def test_cancel_from_the_page_ends_the_invocation_over_the_websocket(
    deployed: Platform, page: DemoPage
) -> None:
    page.page.fill("#seconds", "10")
    page.page.click("#run")
    page.page.wait_for_selector("#statuses li[data-status=running]")
    page.page.click("#cancel")
    demo = page.finish()
    invocation_id = check_accepted(demo, page, deployed)
    assert demo["cancel"] == {"status": 200}
    assert page.statuses()[-1] == "cancelled"
    assert page.text("#result") == "ended cancelled: cancelled"
    # Cut short: the result came long before the task could have finished.
    assert (demo["times"][-1] - demo["accepted"]["at"]) / 1000 < 5, demo

    record = deployed.get(f"/invocations/{invocation_id}").json()
    assert record["status"] == "cancelled" and record["response"] is None
    no_result = deployed.get(f"/invocations/{invocation_id}/result")
    assert no_result.status_code == 409
    assert error_of(no_result)["code"] == "no_result"


@pytest.mark.slow
def test_a_failing_call_shows_its_status_and_the_function_s_answer(
    deployed: Platform, page: DemoPage
) -> None:
    page.page.fill("#limit", "1")
    page.page.click("#run")
    demo = page.finish()
    invocation_id = check_accepted(demo, page, deployed)
    assert page.statuses()[-1] == "failed"
    final = demo["messages"][-1]["invocation"]
    assert final["response"]["status"] == 400
    assert page.text("#result") == (
        "ended failed: the function answered 400: "
        + json.dumps({"error": "limit must be within 2..2000000 and seconds within 0..10"})
    )
    assert deployed.get(f"/invocations/{invocation_id}").json()["status"] == "failed"


@pytest.mark.slow
def test_an_event_source_stops_after_the_result(deployed: Platform, page: DemoPage) -> None:
    seen = page.page.evaluate(
        """async () => {
          const answer = await (await fetch("/async-function/long-task", {
            method: "POST", body: JSON.stringify({ limit: 100, seconds: 0 }),
          })).json();
          const seen = { results: 0, requests: 0 };
          const source = new EventSource(answer.events_url);
          source.addEventListener("open", () => { seen.requests += 1; });
          source.addEventListener("result", () => { seen.results += 1; });
          // Chromium waits 3 s before reconnecting a stream that ended.
          await new Promise((done) => setTimeout(done, 4500));
          seen.state = source.readyState;
          source.close();
          return seen;
        }"""
    )
    assert seen["results"] == 1, seen
    assert seen["state"] == 2, seen  # EventSource.CLOSED: the browser itself gave up
