"""fissile/runtime/response.py: what a function may return."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import pytest

from fissile.runtime.response import (
    BYTES_TYPE,
    JSON_TYPE,
    TEXT_TYPE,
    Response,
    encode_body,
    encode_chunk,
    to_response,
)


@pytest.mark.parametrize(
    ("value", "body"),
    [
        ({"hello": "world"}, {"hello": "world"}),
        ([1, 2, 3], [1, 2, 3]),
        ({}, {}),
        (42, 42),
        (1.5, 1.5),
        (True, True),
    ],
)
def test_json_values(value: Any, body: Any) -> None:
    response = to_response(value)
    assert response.status == 200
    assert dict(response.headers) == {"content-type": JSON_TYPE}
    assert json.loads(response.body) == body


def test_json_falls_back_to_str_for_unknown_types() -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert json.loads(to_response({"at": when}).body) == {"at": str(when)}


def test_text() -> None:
    response = to_response("héllo")
    assert (response.status, response.body) == (200, "héllo".encode())
    assert dict(response.headers) == {"content-type": TEXT_TYPE}


@pytest.mark.parametrize("value", [b"\x00\xff", bytearray(b"\x00\xff"), memoryview(b"\x00\xff")])
def test_bytes(value: Any) -> None:
    response = to_response(value)
    assert response.body == b"\x00\xff"
    assert isinstance(response.body, bytes)
    assert dict(response.headers) == {"content-type": BYTES_TYPE}


def test_none_is_204_with_no_body() -> None:
    response = to_response(None)
    assert (response.status, response.body) == (204, b"")


def test_body_and_status() -> None:
    response = to_response(({"created": 1}, 201))
    assert response.status == 201
    assert json.loads(response.body) == {"created": 1}
    assert dict(response.headers)["content-type"] == JSON_TYPE
    assert to_response(("gone", HTTPStatus.GONE)).status == 410


def test_body_status_and_headers() -> None:
    response = to_response(("<p>hi</p>", 202, {"Content-Type": "text/html", "X-Count": 3}))
    assert response.status == 202
    assert response.body == b"<p>hi</p>"
    # The function's content type replaces the default one, whatever its case.
    assert dict(response.headers) == {"Content-Type": "text/html", "X-Count": "3"}


def test_tuple_with_none_body() -> None:
    response = to_response((None, 404))
    assert (response.status, response.body, dict(response.headers)) == (404, b"", {})


@pytest.mark.parametrize("status", ["200", 99, 600, True, 200.0, None])
def test_bad_status(status: Any) -> None:
    with pytest.raises(TypeError, match="status must be an integer from 100 to 599"):
        to_response(("x", status))
    with pytest.raises(TypeError, match="status must be an integer"):
        to_response(("x", status, {}))


def test_bad_tuples() -> None:
    with pytest.raises(TypeError, match=r"return \(body, status\)"):
        to_response(("only body",))
    with pytest.raises(TypeError, match=r"return \(body, status\)"):
        to_response(("a", 200, {}, "extra"))
    with pytest.raises(TypeError, match="third item"):
        to_response(("a", 200, [("x", "y")]))


def test_response_is_returned_as_is() -> None:
    original = Response(b"raw", 418, {"x-tea": "yes"})
    assert to_response(original) is original


def test_explicit_response() -> None:
    response = Response({"a": 1}, 201)
    assert (response.status, dict(response.headers)) == (201, {"content-type": JSON_TYPE})
    typed = Response("<b>", content_type="text/html")
    assert dict(typed.headers) == {"content-type": "text/html"}
    custom = Response("x", headers={"CONTENT-TYPE": "text/csv"})
    assert dict(custom.headers) == {"CONTENT-TYPE": "text/csv"}
    assert repr(Response(b"abc")) == "<Response 200 3 bytes>"


def test_encode_body() -> None:
    assert encode_body(None) == (b"", None)
    assert encode_body("a") == (b"a", TEXT_TYPE)
    assert encode_body(b"a") == (b"a", BYTES_TYPE)
    assert encode_body({"a": 1}) == (b'{"a": 1}', JSON_TYPE)


def test_iterators_are_streamed_other_values_encoded_whole() -> None:
    def gen() -> Iterator[bytes]:
        yield b"x"

    async def agen() -> AsyncIterator[str]:
        yield "y"

    for body in (gen(), agen(), iter([b"a"])):
        response = to_response((body, 201, {"content-type": "text/event-stream"}))
        assert response.stream is body and response.body == b""
        assert response.headers == [("content-type", "text/event-stream")]
    # Iterables that are not iterators are values, encoded whole as before.
    assert to_response([1, 2]).stream is None and to_response([1, 2]).body == b"[1, 2]"
    assert to_response("text").stream is None


def test_encode_chunk() -> None:
    assert encode_chunk("é") == "é".encode()
    assert encode_chunk(bytearray(b"ab")) == b"ab"
    with pytest.raises(TypeError, match="yields bytes or str, not dict"):
        encode_chunk({})
