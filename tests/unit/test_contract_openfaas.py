"""fissile/runtime/contracts/openfaas.py: OpenFaaS's python3-http and python3-flask handlers."""

from __future__ import annotations

import json
import sys
import types
from typing import Any

import pytest
from contractkit import context_maker, request_maker

from fissile.runtime.contracts import bind
from fissile.runtime.request import Request
from fissile.runtime.response import Response

request = request_maker("POST", "/function/fn", host="h")
context = context_maker()


def http(func: Any, req: Request) -> Response:
    return bind(func, "fn", contract="openfaas-http").call(req, context())


def test_python3_http_event_and_context() -> None:
    seen: dict[str, Any] = {}

    def handle(event: Any, context: Any) -> Any:
        seen.update(
            body=event.body,
            header=event.headers.get("X-Custom"),
            method=event.method,
            query=event.query.getlist("a"),
            path=event.path,
            hostname=context.hostname,
        )
        return {"statusCode": 200, "body": "ok"}

    req = request("PUT", "/function/fn/deep/er", "a=1&a=2", {"x-custom": "c"}, b"\x00data")
    response = http(handle, req)
    assert (response.status, response.body) == (200, b"ok")
    assert seen == {
        "body": b"\x00data",
        "header": "c",
        "method": "PUT",
        "query": ["1", "2"],
        "path": "/deep/er",
        "hostname": seen["hostname"],
    }
    assert isinstance(seen["hostname"], str) and seen["hostname"]


def test_python3_http_status_headers_and_body() -> None:
    def handle(event: Any, context: Any) -> Any:
        return {"statusCode": 201, "body": "created", "headers": {"Location": "/things/1"}}

    response = http(handle, request())
    assert (response.status, response.body) == (201, b"created")
    assert ("Location", "/things/1") in response.headers
    assert ("Content-Type", "text/html; charset=utf-8") in response.headers


def test_python3_http_bodies_as_the_template_writes_them() -> None:
    as_json = http(lambda e, c: {"body": {"b": 1, "a": [1]}}, request())
    assert (as_json.status, as_json.body) == (200, b'{"a":[1],"b":1}\n')  # flask.jsonify
    assert ("Content-Type", "application/json") in as_json.headers
    assert http(lambda e, c: {"body": 42}, request()).body == b"42"
    assert http(lambda e, c: {"statusCode": 204}, request()).status == 204
    empty = http(lambda e, c: None, request())
    assert (empty.status, empty.body) == (200, b"")
    raw = http(lambda e, c: {"body": b"\x01\x02", "headers": {"content-type": "x/y"}}, request())
    assert raw.body == b"\x01\x02"
    assert ("content-type", "x/y") in raw.headers
    # anything but a dict goes to Flask as it is
    assert http(lambda e, c: ("plain", 202), request()).status == 202


def test_python3_flask_gets_the_body_as_text() -> None:
    def handle(req: Any) -> Any:
        return f"Hello! You said: {req!r}"

    handler = bind(handle, "fn", contract="openfaas-flask")
    response = handler.call(request(body="héllo".encode()), context())
    assert response.body == "Hello! You said: 'héllo'".encode()
    assert ("Content-Type", "text/html; charset=utf-8") in response.headers


def test_python3_flask_raw_body(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAW_BODY", "true")

    def handle(req: Any) -> Any:
        return {"type": type(req).__name__, "n": len(req)}

    response = bind(handle, "fn", contract="openfaas-flask").call(
        request(body=b"\xff\xfe"), context()
    )
    assert json.loads(response.body) == {"type": "bytes", "n": 2}


def test_auto_detects_the_templates_handler_module(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("handler")

    def handle(event: Any, context: Any) -> Any:
        return None

    def handle_req(req: Any) -> Any:
        return req

    handle_req.__name__ = "handle"
    monkeypatch.setitem(sys.modules, "handler", module)
    assert bind(handle, "fn", module=module).contract == "openfaas-http"
    assert bind(handle_req, "fn", module=module).contract == "openfaas-flask"
    assert bind(handle_req, "fn").contract == "native"  # not in handler.py: nothing certain


def test_wrong_shapes() -> None:
    with pytest.raises(TypeError, match=r"handle\(event, context\)"):
        bind(lambda req: req, "fn", contract="openfaas-http")
    with pytest.raises(TypeError, match=r"handle\(req\)"):
        bind(lambda e, c: e, "fn", contract="openfaas-flask")
