"""The dashboard (``/ui`` on the control API) in headless Chromium: signing in with the API
token, the functions list, a function's page, invoking it from the page, a crash appearing,
and no request leaving loopback. Screenshots go to an artifacts directory
(``$FISSILE_TEST_ARTIFACTS``, else a temporary one); with ``FISSILE_DOCS_SCREENSHOT=1`` the
function page's is also copied to ``docs/img/dashboard.png`` (``make dashboard-screenshot``).

Needs Debian's ``chromium`` and the ``playwright`` package, like test_async_browser.py (skipped
without them, failed without them when CI=true). About 10 s.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from syskit import Platform, write
from test_async_browser import chromium

DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
NAME = "ui-hello"
CODE = """
import os

def main(request):
    if request.body == b"crash":
        print("crashing on purpose", flush=True)
        os._exit(1)
    print("hello to", request.body.decode(), flush=True)
    return "hello " + request.body.decode()
"""

# The page's script has refreshed it. (Selectors, not wait_for_function: the dashboard's
# Content-Security-Policy forbids the eval that needs.)
UPDATED = "#updated:text-matches('^updated')"

pytestmark = pytest.mark.slow


def token_of(platform: Platform) -> str:
    return (platform.data_dir / "api-token").read_text().strip()


@pytest.fixture(scope="module")
def deployed(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    code = write(tmp_path_factory.mktemp("ui") / "hello.py", CODE)
    platform.ok("fn", "create", "--name", NAME, "--code", str(code))
    route = ("--name", "ui-hello-route", "--function", NAME, "--url", "/ui-hello")
    platform.ok("route", "create", *route)
    for _ in range(3):
        assert platform.request("POST", f"/function/{NAME}", content=b"warm-up").status_code == 200
    try:
        yield platform
    finally:
        platform.ok("route", "delete", "--name", "ui-hello-route")
        platform.ok("fn", "delete", "--name", NAME)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("FISSILE_TEST_ARTIFACTS")
    directory = Path(chosen) if chosen else tmp_path_factory.mktemp("artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class Browser:
    """Headless Chromium with a fresh profile; every request it makes is recorded, and any to a
    host other than loopback is refused (and fails the test)."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.requests: list[str] = []
        self.outside: list[str] = []
        self.problems: list[str] = []
        context.route("**/*", self._route)

    def _route(self, route: Any) -> None:
        url = route.request.url
        self.requests.append(url)
        if urlsplit(url).hostname not in LOOPBACK and not url.startswith(("data:", "about:")):
            self.outside.append(url)
            route.abort()
            return
        route.continue_()

    def page(self) -> Any:
        page = self.context.new_page()
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("console", self._console)
        return page

    def _console(self, message: Any) -> None:
        # Answers with an error status are logged too (the wrong token's 401, the recent
        # requests' 404 before the router's part lands); the tests check those themselves.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(f"console: {message.text}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    profile = tmp_path_factory.mktemp("chromium-ui") / "profile"
    with chromium(profile, viewport={"width": 1400, "height": 1000}) as context:
        yield Browser(context)


def test_without_the_token_the_api_refuses_and_the_dashboard_asks_for_it(
    deployed: Platform,
) -> None:
    http = httpx.Client(base_url=deployed.api_url, follow_redirects=False)
    with http:
        assert http.get("/v1/stats").status_code == 401
        page = http.get("/ui")
        assert page.status_code == 303 and page.headers["location"] == "/ui/login"
        login = http.get("/ui/login")
        assert login.status_code == 200 and 'name="token"' in login.text
        wrong = http.post("/ui/login", data={"token": "nope"})
        assert wrong.status_code == 401 and "wrong token" in wrong.text
        assert "set-cookie" not in wrong.headers
        # A form posted from another site signs nobody in, even with the right token.
        forged = http.post(
            "/ui/login", data={"token": token_of(deployed)}, headers={"origin": "http://evil"}
        )
        assert forged.status_code == 403 and "set-cookie" not in forged.headers


def test_the_session_cookie_reads_but_only_the_page_may_invoke(deployed: Platform) -> None:
    http = httpx.Client(base_url=deployed.api_url, follow_redirects=False)
    with http:
        signed = http.post("/ui/login", data={"token": token_of(deployed)})
        assert signed.status_code == 303 and signed.headers["location"] == "/ui"
        cookie = signed.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert token_of(deployed) not in cookie
        assert http.get("/v1/stats").status_code == 200  # the cookie is kept by the client
        invoke = f"/v1/functions/{NAME}/invoke"
        origin = deployed.api_url
        assert http.post(invoke, content=b"x").status_code == 401  # no header, no origin
        assert http.post(invoke, headers={"x-fissile-csrf": "1"}).status_code == 401
        foreign = {"x-fissile-csrf": "1", "origin": "http://evil.example"}
        assert http.post(invoke, headers=foreign).status_code == 401
        # Other writes never take the cookie.
        assert http.delete(f"/v1/functions/{NAME}").status_code == 401
        allowed = http.post(
            invoke, content=b"cookie", headers={"x-fissile-csrf": "1", "origin": origin}
        )
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["status"] == 200 and allowed.json()["body"] == "hello cookie"


def test_sign_in_see_the_functions_invoke_and_watch_a_crash(
    deployed: Platform, browser: Browser, artifacts: Path
) -> None:
    page = browser.page()
    base = deployed.api_url
    page.goto(f"{base}/ui")
    assert page.url == f"{base}/ui/login"
    page.screenshot(path=str(artifacts / "login.png"))

    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    assert "wrong token" in page.text_content("#login-error")

    page.fill("#token", token_of(deployed))
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/ui")
    assert token_of(deployed) not in page.url
    [cookie] = [c for c in browser.context.cookies() if c["name"] == "fissile_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    row = page.locator(f'tr[data-function="{NAME}"]')
    assert row.count() == 1
    page.wait_for_selector(UPDATED)
    assert int(row.locator('[data-field="instances.ready"]').text_content()) >= 1
    assert row.locator("svg.spark path").count() == 2
    page.screenshot(path=str(artifacts / "overview.png"), full_page=True)

    page.click(f'a[href="/ui/functions/{NAME}"]')
    page.wait_for_url(f"{base}/ui/functions/{NAME}")
    assert "/ui-hello" in page.text_content("#triggers")
    assert page.locator("#processes tr").count() >= 1
    assert page.text_content("#processes").strip() != "no instance running"

    page.fill("#invoke-body", "browser")
    page.click("#invoke-send")
    page.wait_for_selector("#invoke-result[data-status='200']")
    assert page.text_content("#invoke-response") == "hello browser"
    # The function's output reaches the page's log.
    page.wait_for_selector("#log-lines:has-text('hello to browser')")

    page.fill("#invoke-body", "crash")
    page.click("#invoke-send")
    page.wait_for_selector("#invoke-result[data-status='502']")
    page.wait_for_selector("#crashes:has-text('exited with status 1')", timeout=15_000)
    assert "1 restarts" in page.text_content("#restarts")
    page.screenshot(path=str(artifacts / "function.png"), full_page=True)
    if os.environ.get("FISSILE_DOCS_SCREENSHOT") == "1":
        DOCS_IMAGE.parent.mkdir(exist_ok=True)
        shutil.copyfile(artifacts / "function.png", DOCS_IMAGE)

    page.goto(f"{base}/ui/triggers")
    assert "ui-hello-route" in page.text_content("#routes")
    page.goto(f"{base}/ui/invocations")
    page.wait_for_selector(UPDATED)

    assert browser.outside == [], browser.outside
    assert all(urlsplit(url).hostname in LOOPBACK for url in browser.requests)
    assert browser.problems == [], browser.problems
    page.close()


def test_the_functions_list_counts_requests(deployed: Platform, browser: Browser) -> None:
    page = browser.page()
    page.goto(f"{deployed.api_url}/ui")
    if page.url.endswith("/ui/login"):
        page.fill("#token", token_of(deployed))
        page.click("button[type=submit]")
        page.wait_for_url(f"{deployed.api_url}/ui")
    requests = page.locator(f'tr[data-function="{NAME}"] [data-field="requests"]')
    assert int(requests.text_content()) >= 3
    page.close()
