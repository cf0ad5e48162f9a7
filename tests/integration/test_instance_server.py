"""fissile/runtime/server.py behind a real unix socket, with the executor's client
(fissile/executor/connection.py) on the other end."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fissile.executor.connection import InstanceConnection, InstanceGone, InstanceResponse
from fissile.runtime.server import HttpConnection, InstanceApp

pytestmark = pytest.mark.usefixtures("isolated_import")

TOKEN = "secret-token"

CODE = """
import asyncio, os, time

def main(request):
    return {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "params": request.params,
        "body": request.text,
        "header": request.headers.get("x-thing"),
    }

def ctx(request, context):
    return {"function": context.function, "id": context.invocation_id,
            "remaining": context.remaining()}

def fail(request):
    raise ValueError("it went wrong")

def bad_status(request):
    return ("x", 999)

class Opaque:
    pass

def opaque(request):
    return Opaque()

def opaque_in_dict(request):
    return {"when": __import__("datetime").date(2024, 1, 2), "what": Opaque()}

async def slow_async(request):
    await asyncio.sleep(float(request.query.get("t", "0")))
    return request.query.get("n", "")

def env(request):
    return os.environ.get("FX_GREETING", "unset")

def threads(request):
    time.sleep(0.3)
    return "done"

def unicode_header(request):
    return ("ok", 200, {"x-name": "\\u65e5\\u672c"})

async def unicode_header_async(request):
    return ("ok", 200, {"x-name": "\\u65e5\\u672c"})

def cookies():
    import flask
    response = flask.make_response("ok")
    response.set_cookie("a", "1")
    response.set_cookie("b", "2")
    return response
"""


class Instance:
    def __init__(self, path: str, app: InstanceApp, deploy_dir: str) -> None:
        self.path = path
        self.app = app
        self.deploy_dir = deploy_dir

    async def connect(self) -> InstanceConnection:
        return await InstanceConnection.open(self.path)

    async def specialize(
        self, conn: InstanceConnection, entrypoint: str = "fxserved.main", **extra: Any
    ) -> InstanceResponse:
        payload = {"function": "served", "deploy_dir": self.deploy_dir, "entrypoint": entrypoint}
        return await control(conn, "/_fissile/specialize", {**payload, **extra})


def raw(
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "host: instance", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def call(
    conn: InstanceConnection, method: str, target: str, body: bytes = b"", **headers: str
) -> InstanceResponse:
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    return await asyncio.wait_for(conn.request(raw(method, target, body, headers)), 5)


async def control(
    conn: InstanceConnection, path: str, payload: Any, token: str = TOKEN
) -> InstanceResponse:
    body = json.dumps(payload).encode()
    return await call(conn, "POST", path, body, x_fissile_control=token)


def header(response: InstanceResponse, name: str) -> list[str]:
    return [v.decode() for k, v in response.headers if k.decode().lower() == name]


@pytest.fixture
async def instance(tmp_path: Path) -> AsyncIterator[Instance]:
    deploy_dir = tmp_path / "deploy"
    deploy_dir.mkdir()
    (deploy_dir / "fxserved.py").write_text(CODE)
    app = InstanceApp(TOKEN)
    path = str(tmp_path / "i.sock")
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(lambda: HttpConnection(app), path)
    try:
        yield Instance(path, app, str(deploy_dir))
    finally:
        server.close()
        await server.wait_closed()
        if app.threads is not None:
            app.threads.shutdown(wait=True)


async def test_unspecialized_instance_answers_503(instance: Instance) -> None:
    conn = await instance.connect()
    response = await call(conn, "GET", "/")
    assert response.status == 503
    assert json.loads(response.body)["error"]["code"] == "not_specialized"


async def test_specialize_then_serve_on_one_keep_alive_connection(instance: Instance) -> None:
    conn = await instance.connect()
    response = await instance.specialize(conn)
    assert response.status == 200
    assert json.loads(response.body) == {"function": "served", "contract": "native", "async": False}
    for n in range(5):
        response = await call(
            conn, "POST", f"/items/{n}?a=1&b=x", f"body {n}".encode(), x_thing="t"
        )
        assert response.status == 200
        assert response.keep_alive
        assert json.loads(response.body) == {
            "method": "POST",
            "path": f"/items/{n}",
            "query": {"a": "1", "b": "x"},
            "params": {},
            "body": f"body {n}",
            "header": "t",
        }
        assert header(response, "content-type") == ["application/json"]
        assert header(response, "content-length") == [str(len(response.body))]
    assert not conn.closed


async def test_wrong_token_is_refused(instance: Instance) -> None:
    conn = await instance.connect()
    payload = {"function": "served", "deploy_dir": instance.deploy_dir, "entrypoint": "main"}
    response = await control(conn, "/_fissile/specialize", payload, token="wrong")
    assert response.status == 403
    assert json.loads(response.body)["error"]["code"] == "forbidden"
    assert instance.app.handler is None
    assert (await call(conn, "GET", "/")).status == 503


async def test_control_endpoints(instance: Instance) -> None:
    conn = await instance.connect()
    health = await control(conn, "/_fissile/healthz", {})
    assert json.loads(health.body) == {"pid": os.getpid(), "function": None}
    unknown = await control(conn, "/_fissile/nothing", {})
    assert unknown.status == 404
    assert (await instance.specialize(conn)).status == 200
    health = await control(conn, "/_fissile/healthz", {})
    assert json.loads(health.body) == {"pid": os.getpid(), "function": "served"}
    again = await instance.specialize(conn)
    assert again.status == 409
    assert json.loads(again.body)["error"]["code"] == "already_specialized"


async def test_control_paths_without_the_header_go_to_the_function(instance: Instance) -> None:
    conn = await instance.connect()
    await instance.specialize(conn)
    response = await call(conn, "POST", "/_fissile/specialize", b"{}")
    assert response.status == 200
    assert json.loads(response.body)["path"] == "/_fissile/specialize"


async def test_load_failure(instance: Instance) -> None:
    conn = await instance.connect()
    response = await instance.specialize(conn, entrypoint="fxserved.missing")
    assert response.status == 500
    error = json.loads(response.body)["error"]
    assert error == {
        "code": "load_failed",
        "message": "module 'fxserved' has no attribute 'missing'",
    }
    assert instance.app.handler is None


async def test_function_raising_is_a_500_with_type_and_message(instance: Instance) -> None:
    conn = await instance.connect()
    await instance.specialize(conn, entrypoint="fxserved.fail")
    response = await call(conn, "GET", "/")
    assert response.status == 500
    assert json.loads(response.body) == {
        "error": {
            "code": "function_error",
            "type": "ValueError",
            "message": "it went wrong",
            "function": "served",
        }
    }
    # The connection survives the failure.
    assert (await call(conn, "GET", "/")).status == 500


async def test_bad_return_value_is_a_500(instance: Instance) -> None:
    conn = await instance.connect()
    await instance.specialize(conn, entrypoint="fxserved.bad_status")
    response = await call(conn, "GET", "/")
    assert response.status == 500
    error = json.loads(response.body)["error"]
    assert error["code"] == "invalid_response"
    assert "status must be an integer from 100 to 599, not 999" in error["message"]


@pytest.mark.parametrize("entrypoint", ["fxserved.opaque", "fxserved.opaque_in_dict"])
async def test_an_object_fissile_cannot_encode_is_never_its_repr(
    instance: Instance, entrypoint: str
) -> None:
    # It used to be 200 with "<fxserved.Opaque object at 0x...>" (json.dumps(default=str)).
    conn = await instance.connect()
    await instance.specialize(conn, entrypoint=entrypoint)
    response = await call(conn, "GET", "/")
    assert response.status == 500
    error = json.loads(response.body)["error"]
    assert error["code"] == "invalid_response"
    assert "cannot encode a fxserved.Opaque as a response body" in error["message"]
    assert b"object at 0x" not in response.body


async def test_params_from_the_router_header(instance: Instance) -> None:
    conn = await instance.connect()
    await instance.specialize(conn)
    response = await call(conn, "GET", "/", x_fissile_params=json.dumps({"Id": "7", "x": 1}))
    assert json.loads(response.body)["params"] == {"Id": "7", "x": "1"}
    response = await call(conn, "GET", "/", x_fissile_params="not json")
    assert json.loads(response.body)["params"] == {}


async def test_context_from_router_headers(instance: Instance) -> None:
    conn = await instance.connect()
    await instance.specialize(conn, entrypoint="fxserved.ctx")
    response = await call(
        conn, "GET", "/", x_fissile_invocation_id="abc123", x_fissile_timeout="2.5"
    )
    body = json.loads(response.body)
    assert (body["function"], body["id"]) == ("served", "abc123")
    assert 2.0 < body["remaining"] <= 2.5


async def test_env_vars_are_set_by_specialize(instance: Instance) -> None:
    conn = await instance.connect()
    await instance.specialize(conn, entrypoint="fxserved.env", env_vars={"FX_GREETING": "bonjour"})
    assert (await call(conn, "GET", "/")).body == b"bonjour"


async def test_async_function_and_pipelining(instance: Instance) -> None:
    conn = await instance.connect()
    specialized = await instance.specialize(conn, entrypoint="fxserved.slow_async")
    assert json.loads(specialized.body)["async"] is True
    # Two pipelined requests on one raw connection: the slow first one is answered first.
    reader, writer = await asyncio.open_unix_connection(instance.path)
    writer.write(raw("GET", "/?t=0.2&n=first") + raw("GET", "/?t=0&n=second"))
    await writer.drain()
    data = b""
    while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"second"):
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        assert chunk, f"connection closed early: {data!r}"
        data += chunk
    assert data.index(b"first") < data.index(b"second")
    writer.close()


async def test_concurrency_runs_sync_functions_in_threads(instance: Instance) -> None:
    conn = await instance.connect()
    await instance.specialize(conn, entrypoint="fxserved.threads", concurrency=4)
    assert instance.app.threads is not None
    conns = [await instance.connect() for _ in range(4)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    responses = await asyncio.gather(*(call(c, "GET", "/") for c in conns))
    elapsed = loop.time() - started
    assert [r.body for r in responses] == [b"done"] * 4
    assert elapsed < 1.0  # four 0.3 s calls overlapped


async def test_connection_close_is_honoured(instance: Instance) -> None:
    conn = await instance.connect()
    await instance.specialize(conn)
    response = await call(conn, "GET", "/", connection="close")
    assert response.status == 200
    assert not response.keep_alive
    assert header(response, "connection") == ["close"]
    with pytest.raises(InstanceGone):
        await call(conn, "GET", "/")


async def test_malformed_request_is_a_400_and_closes(instance: Instance) -> None:
    reader, writer = await asyncio.open_unix_connection(instance.path)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b'"code": "bad_request"' in data
    writer.close()


async def test_non_latin1_header_from_a_sync_function(instance: Instance) -> None:
    conn = await instance.connect()
    await instance.specialize(conn, entrypoint="fxserved.unicode_header")
    response = await call(conn, "GET", "/")
    assert response.status in (200, 500)


async def test_non_latin1_header_from_an_async_function(instance: Instance) -> None:
    conn = await instance.connect()
    await instance.specialize(conn, entrypoint="fxserved.unicode_header_async")
    response = await asyncio.wait_for(conn.request(raw("GET", "/")), 1)
    assert response.status in (200, 500)


async def test_fission_function_setting_two_cookies(instance: Instance) -> None:
    conn = await instance.connect()
    await instance.specialize(conn, entrypoint="fxserved.cookies")
    response = await call(conn, "GET", "/")
    assert response.status == 200
    assert sorted(c.split(";")[0] for c in header(response, "set-cookie")) == ["a=1", "b=2"]
