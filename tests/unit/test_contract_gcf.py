"""fissile/runtime/contracts/gcf.py: Google Cloud Functions' HTTP and CloudEvent functions."""

from __future__ import annotations

import json
from typing import Any

import flask
import functions_framework
import pytest
from cloudevents.http import CloudEvent
from contractkit import context_maker, request_maker

from fissile.runtime.contracts import bind
from fissile.runtime.request import Request
from fissile.runtime.response import Response

request = request_maker(path="/function/fn", host="fissile.test")
context = context_maker()


def call(func: Any, req: Request, contract: str = "gcf") -> Response:
    handler = bind(func, "fn", contract=contract)
    assert handler.contract == "gcf"
    return handler.call(req, context())


# --- HTTP functions ----------------------------------------------------------------------


@functions_framework.http
def hello_http(request: flask.Request) -> Any:
    payload = request.get_json(silent=True) or {}
    name = payload.get("name") or request.args.get("name") or "World"
    return f"Hello {name}!"


def test_http_function_through_the_decorator_and_auto() -> None:
    response = call(hello_http, request(query="name=ada"), contract="auto")
    assert (response.status, response.body) == (200, b"Hello ada!")
    assert ("Content-Type", "text/html; charset=utf-8") in response.headers
    posted = request("POST", headers={"content-type": "application/json"}, body=b'{"name":"bo"}')
    assert call(hello_http, posted).body == b"Hello bo!"


def test_the_function_gets_a_real_flask_request() -> None:
    seen: dict[str, Any] = {}

    def inspect_request(request: flask.Request) -> Any:
        seen["type"] = type(request)
        seen["path"] = request.path
        seen["url"] = request.url
        seen["form"] = request.form.to_dict()
        seen["header"] = request.headers.get("X-Thing")
        seen["data"] = request.data
        return {"ok": True}, 201, {"x-made": "yes"}

    req = request(
        "POST",
        "/function/fn/sub/path",
        "q=1",
        {"content-type": "application/x-www-form-urlencoded", "x-thing": "t"},
        b"a=1&b=2",
    )
    response = call(inspect_request, req)
    assert response.status == 201
    assert json.loads(response.body) == {"ok": True}
    assert ("x-made", "yes") in response.headers
    assert seen["type"] is flask.Request
    assert seen["path"] == "/sub/path"  # as the function's own URL shows it
    assert seen["url"] == "http://fissile.test/function/fn/sub/path?q=1"
    assert seen["form"] == {"a": "1", "b": "2"}
    assert seen["header"] == "t"


def test_abort_answers_its_status() -> None:
    def strict(request: flask.Request) -> Any:
        if "name" not in request.args:
            flask.abort(400, description="name is required")
        return "fine"

    response = call(strict, request())
    assert response.status == 400
    assert b"name is required" in response.body
    assert call(strict, request(query="name=x")).body == b"fine"


def test_a_flask_response_and_other_exceptions() -> None:
    def made(request: flask.Request) -> Any:
        return flask.Response("teapot", 418, {"x-kind": "tea"}, mimetype="text/plain")

    response = call(made, request())
    assert (response.status, response.body) == (418, b"teapot")
    assert ("x-kind", "tea") in response.headers

    def broken(request: flask.Request) -> Any:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        call(broken, request())


def test_auto_detects_a_flask_request_annotation() -> None:
    assert bind(hello_http.__wrapped__, "fn").contract == "gcf"  # type: ignore[attr-defined]


# --- CloudEvent functions ------------------------------------------------------------------

events: list[CloudEvent] = []


@functions_framework.cloud_event
def on_event(cloud_event: CloudEvent) -> None:
    events.append(cloud_event)


@pytest.fixture(autouse=True)
def _clear() -> None:
    events.clear()


def test_binary_mode_cloudevent() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-type": "com.example.created",
        "ce-source": "//example/things",
        "ce-id": "e-1",
        "content-type": "application/json",
    }
    response = call(on_event, request("POST", headers=headers, body=b'{"n": 1}'), "auto")
    assert (response.status, response.body) == (200, b"OK")
    (event,) = events
    assert (event["type"], event["source"], event["id"]) == (
        "com.example.created",
        "//example/things",
        "e-1",
    )
    assert event.data == {"n": 1}


def test_structured_mode_cloudevent() -> None:
    body = {
        "specversion": "1.0",
        "type": "com.example.deleted",
        "source": "/s",
        "id": "e-2",
        "data": {"x": [1]},
    }
    headers = {"content-type": "application/cloudevents+json"}
    call(on_event, request("POST", headers=headers, body=json.dumps(body).encode()))
    (event,) = events
    assert (event["type"], event.data) == ("com.example.deleted", {"x": [1]})


def test_a_message_queue_trigger_becomes_a_cloudevent() -> None:
    headers = {
        "x-fissile-trigger": "mqt",
        "x-fissile-topic": "orders",
        "x-fissile-message-id": "m-9",
        "content-type": "application/json",
    }
    assert call(on_event, request("POST", headers=headers, body=b'{"id": 4}')).status == 200
    (event,) = events
    assert event["type"] == "fissile.mqt.message"
    assert event["source"] == "//fissile/topics/orders"
    assert event["id"] == "m-9"
    assert event["specversion"] == "1.0"
    assert event.data == {"id": 4}


@pytest.mark.parametrize(
    ("headers", "type_", "source"),
    [
        (
            {"x-fissile-trigger": "timer", "x-fissile-timer-name": "t"},
            "fissile.timer.fired",
            "//fissile/timers/t",
        ),
        ({"x-fissile-async": "true"}, "fissile.invocation.async", "//fissile/functions/fn"),
        (
            {"x-fissile-chain-depth": "1", "x-fissile-caller": "up"},
            "fissile.function.invoked",
            "//fissile/functions/up",
        ),
    ],
)
def test_other_platform_calls_become_cloudevents(
    headers: dict[str, str], type_: str, source: str
) -> None:
    call(on_event, request("POST", headers=headers, body=b"text"))
    (event,) = events
    assert (event["type"], event["source"], event["id"]) == (type_, source, "inv-1")
    assert event.data == b"text"


def test_a_plain_request_to_a_cloudevent_function_is_400() -> None:
    plain = request("POST", headers={"content-type": "application/json"}, body=b'{"a": 1}')
    response = call(on_event, plain)
    assert response.status == 400
    assert b"CloudEvents" in response.body
    # functions-framework's own answer to a body that is not even JSON
    assert call(on_event, request("POST", body=b"hello")).status == 415
    assert events == []


def test_unsupported_signature_types(monkeypatch: pytest.MonkeyPatch) -> None:
    from functions_framework import _function_registry

    def typed_fn(data: Any) -> Any:  # pragma: no cover - never called
        return data

    monkeypatch.setitem(_function_registry.REGISTRY_MAP, "typed_fn", "typed")
    with pytest.raises(TypeError, match="'typed' function"):
        bind(typed_fn, "fn", contract="gcf")
    with pytest.raises(TypeError, match="takes 2 arguments"):
        bind(lambda a, b: None, "fn", contract="gcf")
