"""fissile/testing/_call.py: calling functions of every contract as the instance server does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import flask
import pytest

from fissile import Context, Request, Response
from fissile.testing import (
    call,
    call_async,
    call_contract,
    call_fission,
    flask_request,
    make_context,
    make_request,
)

# -- native -----------------------------------------------------------------------------


def test_a_one_argument_function_and_its_json_answer() -> None:
    def main(request: Request) -> Any:
        return {"path": request.path, "page": request.query.get("page")}

    result = call(main, make_request("GET", "/items?page=2"))
    assert result.status == 200
    assert result.json() == {"path": "/items", "page": "2"}
    assert result.headers == [("content-type", "application/json")]


def test_a_two_argument_function_gets_the_context() -> None:
    def main(request: Request, context: Context) -> Any:
        context.logger.info("called")
        return context.invoke("other").text, 201, {"X-Fn": context.function}

    context = make_context("students", replies={"other": "fine"})
    result = call(main, make_request(), context)
    assert (result.status, result.text, result.header("x-fn")) == (201, "fine", "students")
    assert result.content_type == "text/plain; charset=utf-8"
    assert context.messages == ["called"]


def test_the_runtimes_reading_of_return_values() -> None:
    assert call(lambda request: None).status == 204
    assert call(lambda request: b"\x00").content_type == "application/octet-stream"
    explicit = call(lambda request: Response("x", 202, [("set-cookie", "a"), ("set-cookie", "b")]))
    assert explicit.status == 202
    assert [v for k, v in explicit.headers if k == "set-cookie"] == ["a", "b"]


def test_a_streamed_body_is_collected_with_the_servers_default_type() -> None:
    def main(request: Request) -> Iterator[str]:
        yield "a"
        yield "b"

    result = call(main)
    assert (result.body, result.content_type) == (b"ab", "text/plain; charset=utf-8")


def test_an_async_function_and_an_async_stream() -> None:
    async def main(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"x"
            await asyncio.sleep(0)
            yield b"y"

        return Response(chunks())

    result = call(main)
    assert (result.body, result.content_type) == (b"xy", "application/octet-stream")


async def test_inside_an_event_loop_call_async_is_the_way() -> None:
    async def main(request: Request) -> str:
        return "ok"

    with pytest.raises(RuntimeError, match="call_async"):
        call(main)
    assert (await call_async(main)).text == "ok"


def test_an_error_propagates_or_is_the_platforms_500() -> None:
    def main(request: Request) -> str:
        raise ValueError("it went wrong")

    with pytest.raises(ValueError, match="it went wrong"):
        call(main)
    result = call(main, raise_errors=False)
    assert result.status == 500
    assert result.json() == {
        "error": {
            "code": "function_error",
            "type": "ValueError",
            "message": "it went wrong",
            "function": "fn",
        }
    }


def test_an_unsendable_return_value_is_invalid_response_as_on_the_platform() -> None:
    result = call(lambda request: object(), raise_errors=False)
    assert result.status == 500
    assert result.json()["error"]["code"] == "invalid_response"


def test_a_native_function_takes_one_or_two_arguments() -> None:
    with pytest.raises(TypeError, match="takes 0 arguments"):
        call(lambda: "x")


# -- Fission (Flask) --------------------------------------------------------------------


def fission_main() -> Any:
    request = flask.request
    if request.path == "/missing":
        flask.abort(404)
    return {"path": request.path, "args": request.args.to_dict(), "json": request.get_json()}


def test_a_fission_main_reads_flask_request() -> None:
    result = call_fission(fission_main, make_request("POST", "/x?b=2", json={"k": 1}))
    assert result.json() == {"path": "/x", "args": {"b": "2"}, "json": {"k": 1}}


def test_a_fission_abort_is_flasks_answer() -> None:
    result = call_fission(fission_main, make_request("GET", "/missing"))
    assert result.status == 404
    assert result.content_type.startswith("text/html")


def test_flask_request_lets_a_test_call_main_itself() -> None:
    with flask_request("PUT", "/y", json={"k": 2}, query={"a": "1"}) as request:
        assert request.method == "PUT"
        assert fission_main() == {"path": "/y", "args": {"a": "1"}, "json": {"k": 2}}


# -- other contracts, through one path ----------------------------------------------------


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"statusCode": 201, "body": f"{event['rawPath']} {context.function_name}"}


def test_lambda_detected_and_named() -> None:
    request = make_request("GET", "/function/fn/abc")
    for contract in ("auto", "lambda"):
        result = call_contract(lambda_handler, request, contract=contract)
        assert (result.status, result.text) == (201, "/abc fn")


def test_a_wsgi_app() -> None:
    app = flask.Flask("shop")

    @app.get("/items/<int:item>")
    def item(item: int) -> Any:
        return {"item": item, "root": flask.request.script_root}

    result = call_contract(app, make_request("GET", "/shop/items/3", headers={"host": "h"}),
                           make_context("shop"), contract="wsgi")  # fmt: skip
    assert result.status == 404  # not mounted under /shop: the app's own 404
    direct = call_contract(app, make_request("GET", "/function/shop/items/3"), make_context("shop"),
                           contract="wsgi")  # fmt: skip
    assert direct.json() == {"item": 3, "root": "/function/shop"}


def test_an_asgi_app_with_its_lifespan() -> None:
    state: dict[str, bool] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            state["started"] = True
            await send({"type": "lifespan.startup.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    result = call_contract(app, make_request("GET", "/p"))
    assert (result.status, result.text) == (200, "/p")
    assert state == {"started": True}


def test_unknown_contract_is_refused() -> None:
    with pytest.raises(TypeError, match="unknown contract"):
        call_contract(lambda request: "x", contract="nope")


@pytest.mark.usefixtures("isolated_import")
def test_code_loaded_from_a_file_as_an_instance_loads_it(tmp_path: Path) -> None:
    code = tmp_path / "fx_loaded.py"
    code.write_text(
        "from flask import request\n"
        "import os\n"
        "def main():\n"
        "    return {'path': request.path, 'cwd': os.getcwd()}\n"
    )
    cwd = Path.cwd()
    result = call_contract(code, make_request("GET", "/here"))
    assert result.json() == {"path": "/here", "cwd": str(tmp_path.resolve())}
    assert Path.cwd() == cwd  # the test's own working directory is back
