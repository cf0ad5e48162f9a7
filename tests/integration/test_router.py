"""fissile/router/app.py (the ASGI router) in front of a real executor, driven in-process
through httpx's ASGI transport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from intkit import Harness

from fissile.models import HTTPTriggerSpec
from fissile.router import Router
from fissile.router.app import _fission_param

ECHO = """
import json

def main(request):
    if request.query.get("status"):
        return ("custom", int(request.query["status"]), {"x-from-function": "yes"})
    return {
        "method": request.method,
        "path": request.path,
        "query": request.query_string,
        "params": request.params,
        "body": request.text,
        "headers": request.headers,
    }
"""


class Routed:
    def __init__(self, harness: Harness, router: Router, client: httpx.AsyncClient) -> None:
        self.harness = harness
        self.router = router
        self.client = client

    def route(self, name: str, **fields: Any) -> None:
        spec = HTTPTriggerSpec(name=name, function="echo", **fields)
        self.harness.store.create("httptriggers", name, spec.model_dump(mode="json"))

    async def echo(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        response = await self.client.request(method, url, **kwargs)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture
async def routed(harness: Harness) -> AsyncIterator[Routed]:
    harness.function("echo", ECHO)
    router = Router(harness.executor, max_body=1000)
    router.follow(harness.store)
    transport = httpx.ASGITransport(app=router)
    async with httpx.AsyncClient(transport=transport, base_url="http://router.test") as client:
        yield Routed(harness, router, client)


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code
    message: str = body["message"]
    return message


async def test_direct_call(routed: Routed) -> None:
    seen = await routed.echo("POST", "/function/echo/sub/path?x=1&y=2", content=b"payload")
    assert (seen["method"], seen["path"], seen["query"], seen["body"]) == (
        "POST",
        "/function/echo/sub/path",
        "x=1&y=2",
        "payload",
    )
    headers = seen["headers"]
    assert headers["x-fissile-function"] == "echo"
    assert headers["x-fissile-full-url"] == "http://router.test/function/echo/sub/path?x=1&y=2"
    assert headers["x-fissile-timeout"] == "60"
    assert len(headers["x-fissile-invocation-id"]) == 16
    assert headers["content-length"] == "7"


async def test_route_with_params(routed: Routed) -> None:
    routed.route("students", url="/students/{id}/courses/{Course}", methods=["GET", "PUT"])
    seen = await routed.echo("PUT", "/students/42/courses/Math/")
    assert seen["params"] == {"id": "42", "Course": "Math"}
    assert seen["headers"]["x-fissile-params-id"] == "42"
    assert seen["headers"]["x-fissile-params-course"] == "Math"


async def test_route_params_reach_the_function_as_fission_headers(routed: Routed) -> None:
    routed.route("users", url="/users/{userId}/files/{path:[a-z/]+}")
    forged = {"X-Fission-Params-Userid": "admin", "X-Fission-Params-Other": "x"}
    seen = await routed.echo("GET", "/users/7/files/a/b", headers=forged)
    assert seen["params"] == {"userId": "7", "path": "a/b"}
    # Go's canonical header names, as Fission's router sets them; a client's copies are dropped.
    assert seen["headers"]["x-fission-params-userid"] == "7"
    assert seen["headers"]["x-fission-params-path"] == "a/b"
    assert "x-fission-params-other" not in seen["headers"]
    assert _fission_param("userId") == "X-Fission-Params-Userid"
    assert _fission_param("user_id") == "X-Fission-Params-User_id"


async def test_clients_cannot_forge_platform_headers(routed: Routed) -> None:
    forged = {
        "x-fissile-params": json.dumps({"admin": "true"}),
        "x-fissile-function": "other",
        "connection": "keep-alive",
    }
    seen = await routed.echo("GET", "/function/echo", headers=forged)
    assert seen["params"] == {}
    assert seen["headers"]["x-fissile-function"] == "echo"


async def test_no_route_is_404(routed: Routed) -> None:
    routed.route("hello", url="/hello")
    response = await routed.client.get("/nothing/here")
    assert error(response, 404, "no_route") == "no route for GET /nothing/here"


async def test_wrong_method_is_405_with_allow(routed: Routed) -> None:
    routed.route("items", url="/items", methods=["GET", "PUT"])
    response = await routed.client.delete("/items")
    assert error(response, 405, "method_not_allowed") == "DELETE is not allowed on /items"
    assert response.headers["allow"] == "GET, PUT"


async def test_head_reaches_a_get_route(routed: Routed) -> None:
    routed.route("items", url="/items", methods=["GET"])
    response = await routed.client.head("/items")
    assert response.status_code == 200


async def test_routes_follow_the_store(routed: Routed) -> None:
    assert (await routed.client.get("/late")).status_code == 404
    routed.route("late", url="/late")
    assert (await routed.echo("GET", "/late"))["path"] == "/late"
    routed.harness.store.delete("httptriggers", "late")
    assert (await routed.client.get("/late")).status_code == 404


async def test_prefix_route(routed: Routed) -> None:
    routed.route("static", prefix="/static", methods=["ANY"])
    assert (await routed.echo("DELETE", "/static/css/site.css"))["path"] == "/static/css/site.css"


async def test_unknown_function(routed: Routed) -> None:
    response = await routed.client.get("/function/ghost")
    assert error(response, 404, "function_not_found") == "function 'ghost' not found"


async def test_body_too_large(routed: Routed) -> None:
    response = await routed.client.post("/function/echo", content=b"x" * 1001)
    assert error(response, 413, "body_too_large") == "request body exceeds 1000 bytes"
    assert (await routed.echo("POST", "/function/echo", content=b"x" * 1000))["body"] == "x" * 1000


async def test_function_status_and_headers_pass_through(routed: Routed) -> None:
    response = await routed.client.get("/function/echo?status=201")
    assert response.status_code == 201
    assert response.text == "custom"
    assert response.headers["x-from-function"] == "yes"
    assert response.headers["content-length"] == "6"


async def test_router_health(routed: Routed) -> None:
    response = await routed.client.get("/_fissile/healthz")
    assert error(response, 200, "ok") == "router is serving"


async def test_path_params_cannot_inject_headers(routed: Routed) -> None:
    routed.route("items", url="/items/{id}")
    response = await routed.client.get("/items/a%0D%0Ax-injected:%20yes")
    assert response.status_code in (200, 400, 404)
    if response.status_code == 200:
        seen = response.json()
        assert "x-injected" not in seen["headers"]
        assert seen["params"] == {"id": "a\r\nx-injected: yes"}
