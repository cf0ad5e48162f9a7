"""``POST /v1/functions/{name}/invoke``: call a function through the router, as ``fissile fn
test`` does, and answer what it answered as JSON (the dashboard's invoke form uses it: a page of
the control API cannot read the router's answers, which come from another origin).

Going through the router, not ``router.invoke``, makes the call what a client's is: routed,
counted and logged the same.

No ``from __future__ import annotations``: FastAPI reads the routes' annotations.
"""

import base64
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Query, Request

from fissile.controlplane.errors import ApiError
from fissile.controlplane.resources import Resources

Errors = Callable[..., dict[int | str, dict[str, Any]]]
MAX_BODY = 1024 * 1024  # what the form sends and what it shows


DOOR_TOKEN_HEADER = "x-fissile-token"


def add_invoke_route(
    app: FastAPI,
    resources: Resources,
    router_url: str,
    errors: Errors,
    token: str | None = None,
) -> None:
    @app.post(
        "/v1/functions/{name}/invoke", tags=["functions"], responses=errors(404, 413, 422, 502)
    )
    async def invoke_function(
        name: str,
        request: Request,
        method: str = Query("POST", pattern=r"^[A-Z]{1,16}$"),
        path: str = Query("", max_length=2048),
        timeout: float = Query(60.0, gt=0, le=900),
    ) -> dict[str, Any]:
        """Call ``name`` with this request's body (and its content type) at
        ``/function/{name}{path}``; the answer's status, headers and body (text, or base64 when
        it is not UTF-8; at most 1 MiB) and how long it took. A refusal of the router (429,
        502, 503, 504) is an answer like any other."""
        import httpx

        resources.get("functions", name)
        body = await request.body()
        if len(body) > MAX_BODY:
            raise ApiError(413, "too_large", f"an invoke body is at most {MAX_BODY} bytes")
        if path and not path.startswith("/"):
            path = "/" + path
        headers = {}
        if token is not None:
            # The caller holds the platform token: it opens a locked function door too (and,
            # an X-Fissile-* header, it never reaches the function).
            headers[DOOR_TOKEN_HEADER] = token
        if "content-type" in request.headers:
            headers["content-type"] = request.headers["content-type"]
        started = time.perf_counter()
        try:
            # The router is this process, on loopback: its certificate (for the names the
            # public uses) is not checked on this hop.
            verify = not router_url.startswith("https://")
            async with httpx.AsyncClient(timeout=timeout, verify=verify) as client:
                response = await client.request(
                    method, f"{router_url}/function/{name}{path}", content=body, headers=headers
                )
        except httpx.HTTPError as exc:
            raise ApiError(502, "invoke_failed", f"calling {name} failed: {exc}") from None
        elapsed = time.perf_counter() - started
        content = response.content[:MAX_BODY]
        try:
            text, encoding = content.decode("utf-8"), "text"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(content).decode("ascii"), "base64"
        return {
            "status": response.status_code,
            "headers": [[k, v] for k, v in response.headers.items()],
            "body": text,
            "body_encoding": encoding,
            "truncated": len(response.content) > MAX_BODY,
            "duration_ms": round(elapsed * 1000, 3),
        }
