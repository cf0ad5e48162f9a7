"""fissile/runtime/request.py: the request a native function receives."""

from __future__ import annotations

import json

import pytest

from fissile.runtime.request import Request


def make(query: str = "", body: bytes = b"", headers: dict[str, str] | None = None) -> Request:
    return Request("POST", "/items/1", query, headers or {}, body)


def test_fields() -> None:
    request = Request("GET", "/a", "x=1", {"host": "h"}, b"", {"id": "7"})
    assert (request.method, request.path, request.query_string) == ("GET", "/a", "x=1")
    assert request.headers == {"host": "h"}
    assert request.params == {"id": "7"}
    assert make().params == {}
    assert repr(request) == "<Request GET /a>"


def test_query_first_value_and_all_values() -> None:
    request = make("a=1&a=2&b=&c=hello%20world&d=x+y")
    assert request.query == {"a": "1", "b": "", "c": "hello world", "d": "x y"}
    assert request.query_lists["a"] == ["1", "2"]
    assert make().query == {}


def test_text_and_json() -> None:
    request = make(body=json.dumps({"name": "é"}).encode())
    assert request.json() == {"name": "é"}
    assert json.loads(request.text) == {"name": "é"}
    assert make().json() is None
    assert make(body=b"\xff").text == "\ufffd"
    with pytest.raises(json.JSONDecodeError):
        make(body=b"{not json").json()


def test_content_type() -> None:
    assert make(headers={"content-type": "application/json"}).content_type == "application/json"
    assert make().content_type == ""
