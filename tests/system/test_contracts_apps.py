"""Whole ASGI and WSGI apps as functions, through a real router: FastAPI and Flask mounted under
route prefixes, a raw WSGI callable, lifespan, streaming, repeated headers."""

from __future__ import annotations

import pytest
from syskit import Platform, error_of, write

FASTAPI_APP = """
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse


@asynccontextmanager
async def lifespan(app):
    yield {"greeting": "hello from the lifespan"}


app = FastAPI(lifespan=lifespan)


@app.get("/items/{item_id}")
async def item(item_id: int, request: Request):
    return {
        "id": item_id,
        "greeting": request.state.greeting,
        "url": str(request.url_for("item", item_id=item_id)),
    }


@app.get("/")
def home():
    return {"home": True}


@app.get("/cookies")
def cookies():
    response = PlainTextResponse("two cookies")
    response.set_cookie("a", "1")
    response.set_cookie("b", "2")
    return response


@app.get("/stream")
async def stream():
    async def parts():
        for n in range(200):
            yield b"%d:" % n + b"x" * 8192 + b"\\n"

    return StreamingResponse(parts(), media_type="text/plain")
"""

FLASK_APP = """
import flask

app = flask.Flask(__name__)


@app.get("/hello/<name>")
def hello(name):
    return {"hello": name, "self": flask.url_for("hello", name=name)}
"""

RAW_WSGI = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("%s|%s" % (environ["SCRIPT_NAME"], environ["PATH_INFO"])).encode()]
"""

FAILING_LIFESPAN = """
from contextlib import asynccontextmanager

from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app):
    raise ConnectionError("database unreachable")
    yield


app = FastAPI(lifespan=lifespan)
"""


@pytest.fixture(scope="module")
def apps(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Platform:
    root = tmp_path_factory.mktemp("apps")
    shop = write(root / "shop_app.py", FASTAPI_APP)
    site = write(root / "site_app.py", FLASK_APP)
    raw = write(root / "raw_site.py", RAW_WSGI)
    failing = write(root / "failing_app.py", FAILING_LIFESPAN)
    platform.ok_many(
        ("fn", "create", "--name", "apps-shop", "--code", str(shop), "--entrypoint",
         "shop_app:app", "--contract", "asgi"),
        ("fn", "create", "--name", "apps-site", "--code", str(site), "--entrypoint",
         "site_app:app", "--contract", "wsgi"),
        # No --contract: auto detects a WSGI callable.
        ("fn", "create", "--name", "apps-raw", "--code", str(raw), "--entrypoint",
         "raw_site:application"),
        ("fn", "create", "--name", "apps-failing", "--code", str(failing), "--entrypoint",
         "failing_app:app"),
    )  # fmt: skip
    platform.ok_many(
        ("route", "create", "--function", "apps-shop", "--prefix", "/shop"),
        ("route", "create", "--function", "apps-site", "--prefix", "/site"),
    )
    return platform


def test_fastapi_app_under_a_prefix(apps: Platform) -> None:
    response = apps.get("/shop/items/42")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": 42,
        "greeting": "hello from the lifespan",
        "url": f"{apps.router_url}/shop/items/42",
    }
    assert apps.get("/shop/").json() == {"home": True}
    # The mount point itself: Starlette redirects to its slash, as under uvicorn --root-path.
    bare = apps.get("/shop")
    assert bare.status_code == 307 and bare.headers["location"].endswith("/shop/")
    # The app's own 404, not the router's.
    missing = apps.get("/shop/nowhere")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    # Through /function/<name> the app is mounted there.
    direct = apps.get("/function/apps-shop/items/7")
    assert direct.json()["url"] == f"{apps.router_url}/function/apps-shop/items/7"


def test_repeated_headers_and_streaming(apps: Platform) -> None:
    response = apps.get("/shop/cookies")
    cookies = response.headers.get_list("set-cookie")
    assert [c.split(";")[0] for c in cookies] == ["a=1", "b=2"]
    assert response.cookies.get("b") == "2"

    with apps.http.stream("GET", apps.router_url + "/shop/stream") as streamed:
        assert streamed.status_code == 200
        assert streamed.headers.get("transfer-encoding") == "chunked"
        lines = b"".join(streamed.iter_bytes()).splitlines()
    assert len(lines) == 200
    assert lines[199] == b"199:" + b"x" * 8192


def test_flask_app_under_a_prefix(apps: Platform) -> None:
    response = apps.get("/site/hello/ada")
    assert response.status_code == 200, response.text
    assert response.json() == {"hello": "ada", "self": "/site/hello/ada"}
    assert apps.get("/site/nowhere").status_code == 404


def test_raw_wsgi_callable_is_detected(apps: Platform) -> None:
    response = apps.get("/function/apps-raw/a/b")
    assert response.status_code == 200, response.text
    assert response.text == "/function/apps-raw|/a/b"
    assert apps.json_of("fn", "get", "--name", "apps-raw")["status"]["contract"] == "wsgi"


def test_a_failing_lifespan_fails_the_load(apps: Platform) -> None:
    response = apps.get("/function/apps-failing")
    assert response.status_code == 500, response.text
    error = error_of(response)
    assert error["code"] == "load_failed"
    assert "database unreachable" in error["message"]
