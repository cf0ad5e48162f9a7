"""The dashboard's pages under ``/ui`` on the control API: server-rendered HTML (Jinja2,
autoescaped) whose numbers a small script (``static/ui.js``) refreshes from the same JSON API
the CLI reads.

Signing in: behind a token, a page asks for it once (``/ui/login``, a POST form) and sets an
HttpOnly, SameSite=Strict cookie holding a session derived from it (``controlplane/auth.py``);
the token itself is never put in a cookie or a URL. Without a token the API is open, and so is
the dashboard.

No ``from __future__ import annotations``: FastAPI reads the routes' annotations.
"""

import functools
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from fissile._units import format_duration, format_memory
from fissile.controlplane.auth import (
    SESSION_COOKIE,
    same_origin,
    session_of,
    session_valid,
)
from fissile.controlplane.errors import ApiError
from fissile.controlplane.resources import Resources
from fissile.invocations import Invocations
from fissile.models import PlatformInfo
from fissile.observability.crashes import CrashLog
from fissile.observability.stats import Stats
from fissile.ui.format import clock, duration_ms, percent, rate, sparkline_path

HERE = Path(__file__).parent
PREFIX = "/ui"
OVERVIEW_SINCE = 60.0
FUNCTION_SINCE = 600.0
MAX_LOGIN_BODY = 4096
TRIGGER_KINDS = ("httptriggers", "timetriggers", "mqtriggers", "watchtriggers")
INVOCATION_STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "cancelled", "dead")
# Only what the page itself serves: no inline script, nothing from another host.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    # Not no-referrer: Chromium would then send `Origin: null` with our own forms.
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


@functools.cache
def _templates() -> Any:
    # Imported at the first page, not when the API is made: most platforms are never browsed.
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        ms=duration_ms,
        percent=percent,
        rate=rate,
        spark=sparkline_path,
        dash=_dash,
        clock=clock,
    )
    return environment


def _dash(value: Any) -> Any:
    return "-" if value is None or value == "" else value


def in_ui(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def add_dashboard(
    app: FastAPI,
    resources: Resources,
    info: PlatformInfo,
    token: str | None,
    stats: Stats | None,
    crashes: CrashLog | None,
    invocations: Invocations | None,
) -> None:
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="ui-static")

    def signed_in(request: Request) -> bool:
        return token is None or session_valid(request.cookies.get(SESSION_COOKIE), token)

    def to_login() -> Response:
        return RedirectResponse(f"{PREFIX}/login", 303, headers=SECURITY_HEADERS)

    def render(template: str, code: int = 200, **values: Any) -> Response:
        values.update(prefix=PREFIX, version=info.version, signed=token is not None)
        html = _templates().get_template(template).render(**values)
        return HTMLResponse(html, code, headers=SECURITY_HEADERS)

    async def function_stats(name: str, since: float) -> dict[str, Any] | None:
        gathered = getattr(app.state, "cluster_stats", None)  # a cluster: every node's
        if gathered is not None:
            merged: dict[str, Any] = await gathered.function(name, since)
            return merged
        return None if stats is None else stats.function(name, since, series=True)

    async def overview_stats(names: list[str], since: float) -> list[dict[str, Any] | None]:
        gathered = getattr(app.state, "cluster_stats", None)
        if gathered is not None:  # one round of the peers for the whole page
            merged = await gathered.all(names, since, series=True)
            return list(merged["functions"])
        return [None if stats is None else stats.function(n, since, series=True) for n in names]

    @app.get(PREFIX, include_in_schema=False)
    async def overview(request: Request) -> Response:
        if not signed_in(request):
            return to_login()
        functions = resources.list_kind("functions")
        found = await overview_stats([f["name"] for f in functions], OVERVIEW_SINCE)
        rows = list(zip(functions, found, strict=True))
        return render("overview.html", rows=rows, since="1m", page="overview")

    @app.get(PREFIX + "/", include_in_schema=False)
    async def overview_slash() -> Response:
        return RedirectResponse(PREFIX, 308)

    @app.get(PREFIX + "/login", include_in_schema=False)
    async def login_form(request: Request) -> Response:
        if signed_in(request):
            return RedirectResponse(PREFIX, 303)
        return render("login.html", error=None, page="login")

    @app.post(PREFIX + "/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        if token is None:
            return RedirectResponse(PREFIX, 303)
        # A form of another site must not sign anyone in (login CSRF).
        if "origin" in request.headers and not same_origin(request.headers, request.url.scheme):
            error = "this form must be sent from the dashboard itself"
            return render("login.html", 403, error=error, page="login")
        body = await request.body()
        if len(body) > MAX_LOGIN_BODY:
            return render("login.html", 413, error="the form is too large", page="login")
        given = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0].strip()
        if not given or not session_valid(session_of(given), token):
            error = "wrong token: give the one in the data dir's api-token file"
            return render("login.html", 401, error=error, page="login")
        response = RedirectResponse(PREFIX, 303)
        response.set_cookie(
            SESSION_COOKIE,
            session_of(token),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    @app.post(PREFIX + "/logout", include_in_schema=False)
    async def logout() -> Response:
        response = RedirectResponse(f"{PREFIX}/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @app.get(PREFIX + "/functions/{name}", include_in_schema=False)
    async def function_page(request: Request, name: str) -> Response:
        if not signed_in(request):
            return to_login()
        try:
            function = resources.get("functions", name)
        except ApiError as exc:
            return render("missing.html", 404, message=exc.message, page="missing")
        triggers = {
            kind: [t for t in resources.list_kind(kind) if t.get("function") == name]
            for kind in TRIGGER_KINDS
        }
        found = await function_stats(name, FUNCTION_SINCE)
        if found is not None and "recent_crashes" in found:  # a cluster: every node's
            recent = found["recent_crashes"]
        else:
            recent = crashes.of(name) if crashes is not None else []
        return render(
            "function.html",
            function=function,
            stats=found,
            crashes=recent,
            triggers=triggers,
            since="10m",
            config=_config_rows(function),
            page="function",
        )

    @app.get(PREFIX + "/invocations", include_in_schema=False)
    async def invocations_page(
        request: Request, status: str = "", function: str = "", limit: int = 50
    ) -> Response:
        if not signed_in(request):
            return to_login()
        limit = min(max(limit, 1), 1000)
        found: list[dict[str, Any]] = []
        if invocations is not None:
            wanted = status if status in INVOCATION_STATUSES else None
            found = [i.to_json() for i in invocations.list(wanted, function or None, limit)]
        return render(
            "invocations.html",
            invocations=found,
            available=invocations is not None,
            statuses=INVOCATION_STATUSES,
            status=status,
            function=function,
            limit=limit,
            page="invocations",
        )

    @app.get(PREFIX + "/invocations/{invocation_id}", include_in_schema=False)
    async def invocation_page(request: Request, invocation_id: str) -> Response:
        if not signed_in(request):
            return to_login()
        record = invocations.get(invocation_id) if invocations is not None else None
        if record is None:
            message = f"invocation {invocation_id!r} not found"
            return render("missing.html", 404, message=message, page="missing")
        return render("invocation.html", invocation=record.to_json(), page="invocation")

    @app.get(PREFIX + "/triggers", include_in_schema=False)
    async def triggers_page(request: Request) -> Response:
        if not signed_in(request):
            return to_login()
        found = {kind: resources.list_kind(kind) for kind in TRIGGER_KINDS}
        return render("triggers.html", triggers=found, page="triggers")


def _config_rows(function: dict[str, Any]) -> list[tuple[str, Any]]:
    status = function["status"]
    # Names only: values of environment variables are often secrets.
    env_vars = ", ".join(sorted(function.get("env_vars") or {}))
    return [
        ("Environment", function["env"]),
        ("Package", function.get("package")),
        ("Entrypoint", function.get("entrypoint")),
        ("Contract", function.get("contract") or status.get("contract")),
        ("Timeout", format_duration(function["timeout"])),
        ("Memory", format_memory(function["memory"])),
        ("CPU", function.get("cpu")),
        ("Scale", f"{function['min_scale']}-{function['max_scale']}"),
        ("Concurrency", function.get("concurrency") or status.get("concurrency")),
        ("Idle timeout", format_duration(function["idle_timeout"])),
        ("Network", function.get("network")),
        ("Env vars", env_vars),
    ]
