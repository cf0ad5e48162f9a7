"""fissile/runtime/contracts/fission_fastapi.py: Fission's python-fastapi functions."""

from __future__ import annotations

import json
import logging
from inspect import iscoroutinefunction as is_async
from pathlib import Path
from typing import Any

import pytest
from fastapi import HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.responses import Response as StarletteResponse

from fissile.runtime.context import Context
from fissile.runtime.contracts import bind
from fissile.runtime.request import Request as FissileRequest
from fissile.runtime.response import Response


def call(func: Any, request: FissileRequest | None = None) -> Response:
    import asyncio

    handler = bind(func, "fn", contract="fission-fastapi")
    # A def stays sync, so that its instances get one call at a time (and scale out).
    assert (handler.contract, handler.is_async) == ("fission-fastapi", is_async(func))
    incoming = request or FissileRequest("GET", "/", "", {}, b"")
    context = Context("fn", "inv-1", 10.0, logging.getLogger("fn"))
    if handler.is_async:
        return asyncio.run(handler.call_async(incoming, context))
    return handler.call(incoming, context)


def test_async_function_reads_the_request() -> None:
    async def main(request: Request) -> Any:
        return {
            "method": request.method,
            "path": request.url.path,
            "query": dict(request.query_params),
            "params": request.path_params,
            "header": request.headers["x-thing"],
            "json": await request.json(),
            "client": request.client.host if request.client else None,
            "host": request.url.hostname,
        }

    incoming = FissileRequest(
        "POST",
        "/items/7",
        "q=a%20b&n=1",
        {"x-thing": "yes", "host": "example.org:8080", "x-forwarded-for": "10.1.2.3, 10.0.0.1"},
        b'{"a": 1}',
        params={"id": "7"},
    )
    response = call(main, incoming)
    assert response.status == 200
    assert dict(response.headers)["content-type"] == "application/json"
    assert json.loads(response.body) == {
        "method": "POST",
        "path": "/items/7",
        "query": {"q": "a b", "n": "1"},
        "params": {"id": "7"},
        "header": "yes",
        "json": {"a": 1},
        "client": "10.1.2.3",
        "host": "example.org",
    }


def test_sync_function_and_plain_values_are_json_as_fastapi_sends_them() -> None:
    def text(request: Request) -> str:
        return "hello"

    response = call(text)
    assert (response.status, response.body) == (200, b'"hello"')
    assert dict(response.headers)["content-type"] == "application/json"
    assert call(lambda request: None).body == b"null"
    assert call(lambda request: ("x", 201)).body == b'["x",201]'
    assert call(lambda request: {"é": 1.5}).body == '{"é":1.5}'.encode()


def test_responses_are_sent_unchanged() -> None:
    def main(request: Request) -> Any:
        response = HTMLResponse("<b>hi</b>", status_code=201, headers={"x-a": "1"})
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    response = call(main)
    assert (response.status, response.body) == (201, b"<b>hi</b>")
    assert ("x-a", "1") in response.headers
    assert ("content-type", "text/html; charset=utf-8") in response.headers
    cookies = [v for k, v in response.headers if k == "set-cookie"]
    assert [c.split(";")[0] for c in cookies] == ["a=1", "b=2"]


def test_a_404_response_and_a_404_http_exception() -> None:
    response = call(lambda request: StarletteResponse(status_code=404))
    assert (response.status, response.body) == (404, b"")

    def missing(request: Request) -> Any:
        raise HTTPException(status_code=404, detail="no such item", headers={"x-why": "gone"})

    response = call(missing)
    assert (response.status, response.body) == (404, b'{"detail":"no such item"}')
    assert ("x-why", "gone") in response.headers
    assert ("content-type", "application/json") in response.headers


def test_streaming_response_streams_and_runs_its_background_task() -> None:
    ran: list[str] = []

    async def chunks() -> Any:
        yield b"a"
        yield "b"

    async def after() -> None:
        ran.append("done")

    def main(request: Request) -> Any:
        return StreamingResponse(
            chunks(), media_type="text/event-stream", background=BackgroundTask(after)
        )

    import asyncio

    async def run() -> list[Any]:
        handler = bind(main, "fn", contract="fission-fastapi")
        context = Context("fn", "inv-1", 10.0, logging.getLogger("fn"))
        response = handler.call(FissileRequest("GET", "/", "", {}, b""), context)
        assert response.stream is not None
        assert ("content-type", "text/event-stream; charset=utf-8") in response.headers
        return [item async for item in response.stream]  # type: ignore[union-attr]

    assert asyncio.run(run()) == [b"a", "b"]
    assert ran == ["done"]


def test_file_response_and_background_task(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("file body")
    ran: list[str] = []

    def main(request: Request) -> Any:
        return FileResponse(
            tmp_path / "f.txt", background=BackgroundTask(lambda: ran.append("done"))
        )

    response = call(main)
    assert (response.status, response.body) == (200, b"file body")
    assert ran == ["done"]


def test_form_without_python_multipart_says_so() -> None:
    pytest.importorskip("starlette.formparsers")
    import starlette.formparsers

    if starlette.formparsers.multipart is not None:
        pytest.skip("python-multipart is installed here")

    async def main(request: Request) -> Any:
        return dict(await request.form())

    headers = {"content-type": "application/x-www-form-urlencoded"}
    with pytest.raises(AssertionError, match="python-multipart"):
        call(main, FissileRequest("POST", "/", "", headers, b"a=1"))


def test_json_response_and_wrong_arity() -> None:
    response = call(lambda request: JSONResponse({"ok": True}, status_code=202))
    assert (response.status, response.body) == (202, b'{"ok":true}')
    with pytest.raises(TypeError, match=r"main\(request: fastapi\.Request\)"):
        bind(lambda: None, "fn", contract="fission-fastapi")


def test_async_function_with_a_background_task_and_a_file(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("async file")
    ran: list[str] = []

    async def main(request: Request) -> Any:
        return FileResponse(
            tmp_path / "f.txt", background=BackgroundTask(lambda: ran.append("done"))
        )

    response = call(main)
    assert (response.status, response.body) == (200, b"async file")
    assert ran == ["done"]

    async def missing(request: Request) -> Any:
        raise HTTPException(status_code=418, detail={"why": "teapot"})

    response = call(missing)
    assert (response.status, response.body) == (418, b'{"detail":{"why":"teapot"}}')


def test_sync_response_with_a_background_task() -> None:
    ran: list[str] = []

    def main(request: Request) -> Any:
        return JSONResponse([1], background=BackgroundTask(lambda: ran.append("done")))

    response = call(main)
    assert (response.status, response.body) == (200, b"[1]")
    assert ran == ["done"]
