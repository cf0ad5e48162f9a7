"""fissile/runtime/contracts/asgi.py: a whole ASGI app (FastAPI) as a function."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from contractkit import context_maker, request_maker
from fastapi import FastAPI
from fastapi import Request as FastAPIRequest
from fastapi.responses import PlainTextResponse, StreamingResponse
from fastapi.responses import Response as FastAPIResponse

from fissile.runtime.contracts import Handler, bind
from fissile.runtime.contracts.asgi import LifespanFailed
from fissile.runtime.response import Response

request = request_maker(host="example.test:8080")
context = context_maker("shop")


def make_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"greeting": "hello"}

    app = FastAPI(lifespan=lifespan)

    @app.get("/items/{item_id}")
    async def item(item_id: int, request: FastAPIRequest) -> dict[str, Any]:
        return {
            "id": item_id,
            "greeting": request.state.greeting,
            "url": str(request.url_for("item", item_id=item_id)),
            "q": request.query_params.get("q"),
        }

    @app.post("/echo")
    async def echo(request: FastAPIRequest) -> FastAPIResponse:
        return PlainTextResponse((await request.body()).upper(), status_code=201)

    @app.get("/cookies")
    def cookies() -> FastAPIResponse:
        response = PlainTextResponse("two cookies")
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    @app.get("/stream")
    def stream() -> StreamingResponse:
        def parts() -> Any:
            for n in range(3):
                yield f"part {n}\n"

        return StreamingResponse(parts(), media_type="text/plain")

    @app.get("/boom")
    def boom() -> None:
        raise ValueError("broken on purpose")

    return app


async def started(app: Any) -> Handler:
    handler = bind(app, "shop")
    assert handler.contract == "asgi" and handler.is_async
    assert handler.startup is not None
    await handler.startup()
    return handler


async def collect(response: Response) -> bytes:
    assert response.stream is not None
    stream = response.stream
    assert isinstance(stream, AsyncIterator)
    return b"".join([chunk async for chunk in stream])


async def test_route_with_a_path_parameter_and_the_lifespan_state() -> None:
    handler = await started(make_app())
    response = await handler.call_async(request(path="/items/42", query="q=x"), context())
    assert response.status == 200
    assert json.loads(response.body) == {
        "id": 42,
        "greeting": "hello",
        "url": "http://example.test:8080/items/42",
        "q": "x",
    }


async def test_body_status_and_the_app_404() -> None:
    handler = await started(make_app())
    response = await handler.call_async(request("POST", "/echo", body=b"abc"), context())
    assert (response.status, response.body) == (201, b"ABC")
    missing = await handler.call_async(request(path="/nowhere"), context())
    assert missing.status == 404
    assert json.loads(missing.body) == {"detail": "Not Found"}


async def test_repeated_headers_are_kept_and_no_header_is_added() -> None:
    handler = await started(make_app())
    response = await handler.call_async(request(path="/cookies"), context())
    cookies = [v for k, v in response.headers if k == "set-cookie"]
    assert [c.split(";")[0] for c in cookies] == ["a=1", "b=2"]
    assert [k for k, _ in response.headers].count("content-type") == 1


async def test_streaming_response_is_an_async_iterator() -> None:
    handler = await started(make_app())
    response = await handler.call_async(request(path="/stream"), context())
    assert response.status == 200
    assert await collect(response) == b"part 0\npart 1\npart 2\n"
    assert ("content-type", "text/plain; charset=utf-8") in response.headers


async def test_an_app_error_is_the_app_500_and_its_traceback_is_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = await started(make_app())
    response = await handler.call_async(request(path="/boom"), context())
    # Starlette answers 500 itself and re-raises, as under uvicorn.
    assert (response.status, response.body) == (500, b"Internal Server Error")
    for _ in range(100):
        if "broken on purpose" in capsys.readouterr().err:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the app's traceback was not logged")


async def test_an_error_before_any_response_raises_to_the_server() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("broken on purpose")

    handler = bind(app, "shop")
    with pytest.raises(ValueError, match="broken on purpose"):
        await handler.call_async(request(), context())


async def test_mounted_under_a_route_prefix() -> None:
    handler = await started(make_app())
    headers = {"x-fissile-route-prefix": "/shop"}
    response = await handler.call_async(request(path="/shop/items/7", headers=headers), context())
    assert response.status == 200, response.body
    assert json.loads(response.body)["url"] == "http://example.test:8080/shop/items/7"


async def test_direct_calls_are_mounted_at_the_function_path() -> None:
    handler = await started(make_app())
    response = await handler.call_async(request(path="/function/shop/items/7"), context())
    assert response.status == 200, response.body
    assert json.loads(response.body)["url"] == "http://example.test:8080/function/shop/items/7"


async def test_raw_scope() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan here")  # served without it, as uvicorn does
        seen.update(scope)
        seen["message"] = await receive()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    handler = await started(app)
    headers = {
        "x-forwarded-proto": "https",
        "x-forwarded-for": "10.1.2.3",
        "x-fissile-route-prefix": "/caf%C3%A9",
    }
    response = await handler.call_async(
        request("PUT", "/caf%C3%A9/a%20b", "x=1", headers, b"data"), context()
    )
    assert (response.status, response.headers) == (204, [])
    assert seen["type"] == "http" and seen["asgi"]["version"] == "3.0"
    assert (seen["method"], seen["scheme"], seen["http_version"]) == ("PUT", "https", "1.1")
    assert (seen["path"], seen["root_path"]) == ("/café/a b", "/café")
    assert seen["raw_path"] == b"/caf%C3%A9/a%20b"
    assert seen["query_string"] == b"x=1"
    assert (b"host", b"example.test:8080") in seen["headers"]
    assert seen["client"] == ("10.1.2.3", 0)
    assert seen["server"] == ("example.test", 8080)
    assert seen["message"] == {"type": "http.request", "body": b"data", "more_body": False}


async def test_lifespan_startup_failure_fails_the_start() -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise ConnectionError("database unreachable")
        yield

    handler = bind(FastAPI(lifespan=lifespan), "shop")
    assert handler.startup is not None
    with pytest.raises(LifespanFailed, match="database unreachable"):
        await handler.startup()


async def test_an_app_that_never_answers_is_an_error() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await receive()

    handler = await started(app)
    with pytest.raises(RuntimeError, match="without a response"):
        await handler.call_async(request(), context())


async def test_a_client_that_leaves_stops_the_stream() -> None:
    stopped = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("http only")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x", "more_body": True})
        finally:
            stopped.set()

    handler = await started(app)
    response = await handler.call_async(request(), context())
    assert response.stream is not None and isinstance(response.stream, AsyncIterator)
    stream: Any = response.stream
    assert await stream.__anext__() == b"x"
    await stream.aclose()
    await asyncio.wait_for(stopped.wait(), 10)


def test_auto_detects_asgi_apps() -> None:
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        pass

    assert bind(make_app(), "shop").contract == "asgi"
    assert bind(raw, "shop").contract == "asgi"
