"""fissile/testing/_requests.py and _context.py: requests and recording contexts for unit
tests of functions."""

from __future__ import annotations

import logging
import time

import pytest

from fissile import Context, Request
from fissile.runtime.context import PlatformError, Reply
from fissile.testing import Invocation, make_context, make_request

# -- make_request -----------------------------------------------------------------------


def test_a_request_defaults_to_get_slash_with_nothing_in_it() -> None:
    request = make_request()
    assert isinstance(request, Request)
    assert (request.method, request.path, request.query_string) == ("GET", "/", "")
    assert request.body == b""
    assert request.params == {}
    assert request.headers == {"content-length": "0"}


def test_query_from_the_path_and_from_a_dict_are_merged() -> None:
    request = make_request("get", "/items?page=2", query={"tag": ["a", "b"], "q": "x y"})
    assert request.method == "GET"
    assert request.path == "/items"
    assert request.query_lists == {"page": ["2"], "tag": ["a", "b"], "q": ["x y"]}
    assert make_request(path="/p", query="a=1&a=2").query_lists == {"a": ["1", "2"]}


def test_json_sets_the_body_and_its_type_and_headers_are_lower_cased() -> None:
    request = make_request("POST", "/", json={"n": 1}, headers={"X-Thing": "t"})
    assert request.json() == {"n": 1}
    assert request.content_type == "application/json"
    assert request.headers["x-thing"] == "t"
    assert request.headers["content-length"] == str(len(request.body))
    # A test's own content type wins.
    typed = make_request("POST", "/", json=[1], headers={"Content-Type": "application/x"})
    assert typed.content_type == "application/x"


def test_a_text_body_is_utf8_and_params_are_the_routes() -> None:
    request = make_request("PUT", "/students/42", body="héllo", params={"id": "42"})
    assert request.body == "héllo".encode()
    assert request.text == "héllo"
    assert request.params == {"id": "42"}


def test_body_and_json_together_are_refused() -> None:
    with pytest.raises(TypeError, match="body or json"):
        make_request("POST", "/", body=b"x", json={})


# -- make_context -----------------------------------------------------------------------


def test_a_context_is_a_runtime_context_counting_down() -> None:
    context = make_context("students", timeout=5.0)
    assert isinstance(context, Context)
    assert context.function == "students"
    assert context.invocation_id == context.chain_id == "test-invocation"
    assert 4.0 < context.remaining() <= 5.0
    assert context.deadline <= time.monotonic() + 5.0


def test_invoke_answers_from_scripted_replies_and_records_each_call() -> None:
    seen: list[Invocation] = []

    def grades(call: Invocation) -> object:
        seen.append(call)
        return {"for": call.json()["student"]}

    context = make_context(
        replies={
            "grades": grades,
            "names": (200, ["ann"]),
            "teapot": (418, "short", {"X-Kind": "pot"}),
            "raw": Reply(201, {"a": "b"}, b"made"),
            "plain": "hello",
        }
    )
    assert context.invoke("grades", {"student": 7}).json() == {"for": 7}
    assert context.invoke("names").json() == ["ann"]
    teapot = context.invoke("teapot", b"\x00", content_type="application/x")
    assert (teapot.status, teapot.text, teapot.headers["x-kind"]) == (418, "short", "pot")
    assert teapot.headers["content-type"] == "text/plain; charset=utf-8"
    raw = context.invoke("raw")
    assert (raw.status, raw.body, raw.headers) == (201, b"made", {"a": "b"})
    plain = context.invoke("plain")
    assert plain.ok and plain.text == "hello"
    assert [c.function for c in context.invocations] == [
        "grades",
        "names",
        "teapot",
        "raw",
        "plain",
    ]
    first = context.invocations[0]
    assert first is seen[0]
    assert (first.data, first.body, first.content_type) == (
        {"student": 7},
        b'{"student": 7}',
        "application/json",
    )
    assert context.invocations[2].content_type == "application/x"


def test_invoke_records_method_path_query_and_headers_and_scripts_by_them() -> None:
    context = make_context(
        replies={
            "GET items /items/1": {"id": 1},
            "POST items /items": lambda call: (201, {"made": call.json()["name"]}),
            "items": (404, {"error": {"code": "no_route"}}),
        }
    )
    assert context.invoke("items", method="get", path="/items/1").json() == {"id": 1}
    made = context.invoke(
        "items", path="items", query={"dry": "1"}, headers={"X-Key": "k"}, json={"name": "pen"}
    )
    assert (made.status, made.json()) == (201, {"made": "pen"})
    # Another method or path of the function: its name's reply.
    assert context.invoke("items", method="DELETE", path="/items/1").status == 404
    get, post, delete = context.invocations
    assert (get.method, get.path, get.query, get.headers, get.body) == (
        "GET",
        "/items/1",
        {},
        {},
        b"",
    )
    assert (post.method, post.path, post.query) == ("POST", "/items", {"dry": ["1"]})
    assert post.headers == {"x-key": "k", "content-type": "application/json"}
    assert (post.data, post.json()) == ({"name": "pen"}, {"name": "pen"})
    assert delete.method == "DELETE"
    with pytest.raises(TypeError, match="data or json"):
        context.invoke("items", "x", json={})


def test_an_unscripted_function_is_the_platforms_404() -> None:
    context = make_context()
    reply = context.invoke("missing", "x")
    assert reply.status == 404
    assert reply.json()["error"]["code"] == "function_not_found"
    assert context.invocations[0].body == b"x"


def test_a_scripted_failure_raises_in_the_function() -> None:
    def down(call: Invocation) -> object:
        raise PlatformError("cannot reach the platform")

    context = make_context(replies={"other": down})
    with pytest.raises(PlatformError):
        context.invoke("other")


def test_publish_is_recorded() -> None:
    context = make_context()
    context.publish("grades", {"n": 1})
    context.publish("raw", b"\x01", mqtype="redis", broker_url="redis://localhost")
    assert [(p.topic, p.body, p.content_type) for p in context.published] == [
        ("grades", b'{"n": 1}', "application/json"),
        ("raw", b"\x01", "application/octet-stream"),
    ]
    assert context.published[0].json() == {"n": 1}
    assert (context.published[1].mqtype, context.published[1].broker_url) == (
        "redis",
        "redis://localhost",
    )


def test_the_logger_records_every_level_and_only_this_contexts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = make_context("fn"), make_context("fn")
    first.logger.debug("quiet %d", 1)
    first.logger.warning("loud")
    second.logger.info("other")
    assert first.messages == ["quiet 1", "loud"]
    assert [r.levelno for r in first.logs] == [logging.DEBUG, logging.WARNING]
    assert second.messages == ["other"]
    # Still reaching the root logger, where pytest's caplog listens.
    assert "loud" in caplog.text
