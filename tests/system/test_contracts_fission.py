"""Functions written for Fission's python and python-fastapi environments, unchanged, on a real
platform: called over HTTP (status, headers, body byte for byte, error paths included), through
an asynchronous invocation and through a message-queue trigger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from syskit import Platform, wait_for, write
from trigkit import read_topic, unique
from werkzeug.exceptions import BadRequest, NotFound

FLASK_APP = """
import requests
from flask import abort, current_app, request

# Module-level code runs inside the instance's Flask app, as on Fission.
current_app.config["GREETING"] = "hello"
IMPORTED_DURING = request.path


def main():
    body = "%s %s user=%s path=%s q=%s via=%s requests=%s" % (
        current_app.config["GREETING"],
        request.method,
        request.headers.get("X-Fission-Params-User"),
        request.headers.get("X-Fission-Params-Path"),
        request.args.get("q"),
        IMPORTED_DURING,
        requests.__name__,
    )
    return body, 201, {"X-Powered-By": "fission-style"}


def bad():
    abort(400)


def form():
    return request.form["missing"]


def lookup():
    if request.args.get("id") != "1":
        abort(404)
    return {"id": 1}


def echo():
    return {"got": request.get_json(force=True), "trigger": request.headers["X-Fissile-Trigger"]}
"""

FASTAPI_APP = """
from fastapi import HTTPException, Request, Response


async def main(request: Request):
    return {
        "method": request.method,
        "query": dict(request.query_params),
        "params": request.path_params,
        "body": (await request.body()).decode(),
        "header": request.headers.get("x-thing"),
    }


def missing(request: Request):
    raise HTTPException(status_code=404, detail="Item not found")


def gone(request: Request):
    return Response(content="gone", status_code=404, media_type="text/plain")


def text(request: Request):
    return "hello"
"""

# A package with its own copies of libraries the environment provides: Fission puts the package
# after the environment's site-packages, so these must not replace the real ones.
FAKE_FLASK = "raise ImportError('the package copy of flask was imported')\n"
FAKE_REQUESTS = "__name__ = 'fake'\nSOURCE = 'package'\n"
SHADOWED = """
import requests
from flask import request


def main():
    return "%s %s" % (request.method, getattr(requests, "SOURCE", "runtime"))
"""


@pytest.fixture(scope="module")
def fns(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Platform:
    root = tmp_path_factory.mktemp("fission-contracts")
    flask_src = write(root / "flask-app" / "main.py", FLASK_APP).parent
    fastapi_src = write(root / "fastapi-app" / "app.py", FASTAPI_APP).parent
    shadow = root / "shadow"
    write(shadow / "main.py", SHADOWED)
    write(shadow / "flask" / "__init__.py", FAKE_FLASK)
    write(shadow / "requests" / "__init__.py", FAKE_REQUESTS)

    def fn(name: str, src: Path, entrypoint: str, contract: str) -> tuple[str, ...]:
        command = ("fn", "create", "--name", name, "--src", str(src), "--entrypoint", entrypoint)
        return (*command, "--contract", contract) if contract else command

    platform.ok_many(
        fn("fc-flask", flask_src, "main.main", "fission"),
        fn("fc-flask-bad", flask_src, "main.bad", "fission"),
        fn("fc-flask-form", flask_src, "main.form", "fission"),
        fn("fc-flask-lookup", flask_src, "main.lookup", ""),  # auto
        fn("fc-flask-echo", flask_src, "main.echo", "fission"),
        fn("fc-fastapi", fastapi_src, "app.main", "fission-fastapi"),
        fn("fc-fastapi-missing", fastapi_src, "app.missing", ""),  # auto: by the annotation
        fn("fc-fastapi-gone", fastapi_src, "app.gone", "fission-fastapi"),
        fn("fc-fastapi-text", fastapi_src, "app.text", "fission-fastapi"),
        fn("fc-shadow", shadow, "main.main", "fission"),
        fn("fc-shadow-auto", shadow, "main.main", ""),
    )
    platform.ok_many(
        (
            "route",
            "create",
            "--function",
            "fc-flask",
            "--method",
            "POST",
            "--url",
            r"/fc/users/{user}/files/{path:[a-zA-Z0-9\.\/]+}",
        ),
        ("route", "create", "--function", "fc-fastapi", "--url", "/fc/items/{item_id}"),
    )
    return platform


def expect(response: Any, status: int, content_type: str, body: bytes) -> None:
    assert (response.status_code, response.content) == (status, body), response.text
    assert response.headers["content-type"] == content_type
    assert response.headers["content-length"] == str(len(body))


def test_flask_function_with_route_params_as_fission_headers(fns: Platform) -> None:
    response = fns.request("POST", "/fc/users/ada/files/docs/a.txt?q=1", content=b"x")
    expect(
        response,
        201,
        "text/html; charset=utf-8",
        b"hello POST user=ada path=docs/a.txt q=1 via=/v2/specialize requests=requests",
    )
    assert response.headers["x-powered-by"] == "fission-style"
    # Characters the route's pattern refuses: no route.
    assert fns.request("POST", "/fc/users/ada/files/a-b").status_code == 404


def test_flask_abort_and_bad_form_answer_as_flask_does(fns: Platform) -> None:
    html = "text/html; charset=utf-8"
    expect(fns.get("/function/fc-flask-bad"), 400, html, BadRequest().get_body().encode())
    form = {"content-type": "application/x-www-form-urlencoded"}
    response = fns.request("POST", "/function/fc-flask-form", content=b"a=1", headers=form)
    assert response.status_code == 400
    assert response.content == BadRequest().get_body().encode()
    expect(fns.get("/function/fc-flask-lookup?id=2"), 404, html, NotFound().get_body().encode())
    expect(fns.get("/function/fc-flask-lookup?id=1"), 200, "application/json", b'{"id":1}\n')


def test_the_package_does_not_shadow_the_environments_libraries(fns: Platform) -> None:
    expect(fns.get("/function/fc-shadow"), 200, "text/html; charset=utf-8", b"GET runtime")
    # Without a Fission contract the package comes first: its copy wins (flask is preloaded).
    expect(fns.get("/function/fc-shadow-auto"), 200, "text/html; charset=utf-8", b"GET package")


def test_fastapi_function_reads_the_request(fns: Platform) -> None:
    response = fns.request(
        "GET", "/fc/items/42?q=a%20b", content=b"payload", headers={"x-thing": "yes"}
    )
    body = {
        "method": "GET",
        "query": {"q": "a b"},
        "params": {"item_id": "42"},
        "body": "payload",
        "header": "yes",
    }
    expect(response, 200, "application/json", json.dumps(body, separators=(",", ":")).encode())


def test_fastapi_answers_404_and_plain_values_as_fastapi_does(fns: Platform) -> None:
    expect(
        fns.get("/function/fc-fastapi-missing"),
        404,
        "application/json",
        b'{"detail":"Item not found"}',
    )
    expect(fns.get("/function/fc-fastapi-gone"), 404, "text/plain; charset=utf-8", b"gone")
    expect(fns.get("/function/fc-fastapi-text"), 200, "application/json", b'"hello"')
    contract = fns.json_of("fn", "get", "--name", "fc-fastapi-missing")
    assert "fission-fastapi" in json.dumps(contract)


def test_fastapi_function_as_an_asynchronous_invocation(fns: Platform) -> None:
    response = fns.request("POST", "/async-function/fc-fastapi/sub?x=1", content=b"later")
    assert response.status_code == 202, response.text
    invocation = response.json()["id"]

    def finished() -> Any:
        document = fns.get(f"/invocations/{invocation}").json()
        return document if document["status"] in {"succeeded", "failed"} else None

    document = wait_for(finished, 60, "the asynchronous invocation")
    assert document["status"] == "succeeded", document
    result = fns.get(f"/invocations/{invocation}/result")
    body = {"method": "POST", "query": {"x": "1"}, "params": {}, "body": "later", "header": None}
    expect(result, 200, "application/json", json.dumps(body, separators=(",", ":")).encode())


def test_flask_function_through_a_message_queue_trigger(fns: Platform) -> None:
    topic, resp = unique("fc-in"), unique("fc-out")
    fns.ok(
        "mqt",
        "create",
        "--name",
        "fc-mqt",
        "--function",
        "fc-flask-echo",
        "--topic",
        topic,
        "--resptopic",
        resp,
    )
    try:
        fns.ok("topic", "publish", "--topic", topic, "--body", '{"n": 1}')
        (answer,) = read_topic("embedded", resp, 1, data_dir=fns.data_dir, timeout=60)
        assert answer.body == b'{"got":{"n":1},"trigger":"mqt"}\n'
        assert answer.headers["content-type"] == "application/json"
    finally:
        fns.ok("mqt", "delete", "--name", "fc-mqt")
