"""fissile/runtime/contracts/wsgi.py: a whole WSGI app (Flask, a raw callable) as a function."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import flask
import pytest
from contractkit import context_maker, request_maker

from fissile.runtime.contracts import Handler, bind
from fissile.runtime.request import Request
from fissile.runtime.response import Response

request = request_maker(host="example.test")
context = context_maker("shop")


def make_app() -> flask.Flask:
    app = flask.Flask("shop")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        return {
            "id": item_id,
            "url": flask.url_for("item", item_id=item_id, _external=True),
            "script_name": flask.request.script_root,
            "q": flask.request.args.get("q"),
        }

    @app.post("/echo")
    def echo() -> Any:
        return flask.request.get_data().upper(), 201, {"x-echo": "yes"}

    @app.get("/cookies")
    def cookies() -> Any:
        response = flask.make_response("two cookies")
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    @app.get("/stream")
    def stream() -> Any:
        def parts() -> Iterator[str]:
            for n in range(3):
                yield f"part {n}\n"

        return flask.Response(parts(), mimetype="text/plain")

    return app


def call(handler: Handler, req: Request) -> Response:
    assert handler.contract == "wsgi" and not handler.is_async
    return handler.call(req, context())


def test_flask_route_under_a_route_prefix() -> None:
    handler = bind(make_app(), "shop", contract="wsgi")
    headers = {"x-fissile-route-prefix": "/shop"}
    response = call(handler, request(path="/shop/items/3", query="q=x", headers=headers))
    assert response.status == 200, response.body
    assert json.loads(response.body) == {
        "id": 3,
        "url": "http://example.test/shop/items/3",
        "script_name": "/shop",
        "q": "x",
    }


def test_flask_direct_call_and_404() -> None:
    handler = bind(make_app(), "shop")
    response = call(handler, request(path="/function/shop/items/3"))
    assert json.loads(response.body)["url"] == "http://example.test/function/shop/items/3"
    assert call(handler, request(path="/function/shop/nowhere")).status == 404


def test_body_status_and_headers_exactly() -> None:
    handler = bind(make_app(), "shop")
    response = call(handler, request("POST", "/echo", body=b"abc"))
    assert (response.status, response.body) == (201, b"ABC")
    assert ("x-echo", "yes") in response.headers
    cookies = [v for k, v in call(handler, request(path="/cookies")).headers if k == "Set-Cookie"]
    assert [c.split(";")[0] for c in cookies] == ["a=1", "b=2"]


def test_streamed_body_is_an_iterator() -> None:
    handler = bind(make_app(), "shop")
    response = call(handler, request(path="/stream"))
    assert response.stream is not None and isinstance(response.stream, Iterator)
    assert b"".join(response.stream) == b"part 0\npart 1\npart 2\n"


def test_raw_wsgi_callable_django_style() -> None:
    closed: list[bool] = []
    seen: dict[str, Any] = {}

    class Result:
        def __init__(self, chunks: list[bytes]) -> None:
            self.chunks = chunks

        def __iter__(self) -> Iterator[bytes]:
            return iter(self.chunks)

        def close(self) -> None:
            closed.append(True)

    def application(environ: dict[str, Any], start_response: Any) -> Result:
        seen.update(environ)
        body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-A", "1"), ("X-A", "2")])
        return Result([b"got " + body])

    handler = bind(application, "shop")
    headers = {
        "x-fissile-route-prefix": "/site",
        "content-type": "text/plain",
        "x-forwarded-proto": "https",
        "x-custom": "v",
    }
    response = call(handler, request("PUT", "/site/a%20b/c", "k=v", headers, b"data"))
    assert (response.status, response.stream) == (200, None)
    assert response.body == b"got data"
    assert response.headers == [("Content-Type", "text/plain"), ("X-A", "1"), ("X-A", "2")]
    assert closed == [True]
    assert (seen["SCRIPT_NAME"], seen["PATH_INFO"]) == ("/site", "/a b/c")
    assert (seen["REQUEST_METHOD"], seen["QUERY_STRING"]) == ("PUT", "k=v")
    assert (seen["wsgi.url_scheme"], seen["SERVER_PORT"]) == ("https", "443")
    assert (seen["CONTENT_TYPE"], seen["HTTP_X_CUSTOM"]) == ("text/plain", "v")


def test_a_generator_app_is_closed_when_the_stream_is() -> None:
    closed: list[bool] = []

    def application(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        try:
            while True:
                yield b"x"
        finally:
            closed.append(True)

    response = call(bind(application, "shop"), request())
    stream: Any = response.stream
    assert next(stream) == b"x" and next(stream) == b"x"
    stream.close()
    assert closed == [True]


def test_errors_raise_to_the_server() -> None:
    def silent(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return [b"no status"]

    with pytest.raises(RuntimeError, match="start_response"):
        call(bind(silent, "shop"), request())

    def failing(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise ValueError("broken on purpose")

    with pytest.raises(ValueError, match="broken on purpose"):
        call(bind(failing, "shop"), request())


def test_auto_detects_wsgi_apps() -> None:
    def application(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return []

    assert bind(make_app(), "shop").contract == "wsgi"
    assert bind(application, "shop").contract == "wsgi"
