"""Functions that call functions and publish to topics (``context.invoke``,
``context.publish``), through the platform socket: with the full sandbox (``--sandbox strict``,
also with --network none; needs root, skips elsewhere but never under CI=true) and with the
sandbox off (dedicated platforms)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from syskit import Platform, Spawn, write
from trigkit import read_topic, unique

CALLER = """
def main(request, context):
    data = request.json()
    reply = context.invoke(data["target"], {"x": data["x"]})
    if data.get("topic"):
        context.publish(data["topic"], {"from": context.function, "x": data["x"]})
    return {"status": reply.status, "answer": reply.json(), "depth": context.chain_depth}
"""

SQUARE = """
def main(request, context):
    x = request.json()["x"]
    return {"square": x * x, "depth": context.chain_depth, "chain": context.chain_id,
            "caller": request.headers.get("x-fissile-caller"),
            "deadline": round(context.remaining(), 1)}
"""

LOOP = """
def main(request, context):
    reply = context.invoke(context.function, request.body)
    return {"depth": context.chain_depth, "inner": reply.status,
            "inner_body": reply.json()}, reply.status if reply.status >= 500 else 200
"""


def deploy(platform: Platform, directory: Path, prefix: str, *extra: str) -> None:
    for name, code in (("caller", CALLER), ("square", SQUARE)):
        source = write(directory / f"{prefix}_{name}.py", code)
        platform.ok("fn", "create", "--name", f"{prefix}-{name}", "--code", str(source), *extra)


def check_invoke_and_publish(platform: Platform, prefix: str) -> None:
    topic = unique("composed")
    response = platform.request(
        "POST",
        f"/function/{prefix}-caller",
        json={"target": f"{prefix}-square", "x": 7, "topic": topic},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == 200
    assert body["depth"] == 0
    answer = body["answer"]
    assert answer["square"] == 49
    assert answer["depth"] == 1
    assert answer["caller"] == f"{prefix}-caller"
    # The callee gets the caller's remaining time, not its own 60 s.
    assert answer["deadline"] <= 10.0
    (published,) = read_topic("embedded", topic, 1, data_dir=platform.data_dir, timeout=10)
    assert json.loads(published.body) == {"from": f"{prefix}-caller", "x": 7}
    assert published.headers["content-type"] == "application/json"


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("the full sandbox needs root (namespaces, cgroups)")
    platform = Platform(tmp_path_factory.mktemp("composition") / "data", ("--sandbox", "strict"))
    platform.start()
    yield platform
    try:
        platform.stop_cleanly()
    finally:
        platform.abandon()


@pytest.mark.slow  # a dedicated --sandbox strict platform (shared by the next test): about 5 s
def test_invoke_and_publish_in_the_sandbox(strict: Platform, tmp_path: Path) -> None:
    deploy(strict, tmp_path, "sbx", "--timeout", "10s")
    check_invoke_and_publish(strict, "sbx")


@pytest.mark.slow
def test_invoke_and_publish_without_network(strict: Platform, tmp_path: Path) -> None:
    deploy(strict, tmp_path, "nonet", "--timeout", "10s", "--network", "none")
    check_invoke_and_publish(strict, "nonet")


def test_unknown_function_and_loop(platform: Platform, tmp_path: Path) -> None:
    deploy(platform, tmp_path, "edge", "--timeout", "10s")
    response = platform.request(
        "POST", "/function/edge-caller", json={"target": "no-such-function", "x": 1}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == 404
    assert response.json()["answer"]["error"]["code"] == "function_not_found"

    source = write(tmp_path / "loop.py", LOOP)
    platform.ok(
        "fn",
        "create",
        "--name",
        "edge-loop",
        "--code",
        str(source),
        "--timeout",
        "30s",
        "--concurrency",
        "32",
    )
    response = platform.request("POST", "/function/edge-loop", content=b"{}")
    assert response.status_code == 508, response.text
    body = response.json()
    innermost = body
    depth = 0
    while "inner_body" in innermost:
        innermost = innermost["inner_body"]
        depth += 1
    assert innermost["error"]["code"] == "loop_detected"
    assert depth == 17  # the first call and 16 nested ones; the 17th nested is refused


@pytest.mark.slow  # a dedicated platform: about 5 s
def test_invoke_and_publish_with_the_sandbox_off(spawn: Spawn, tmp_path: Path) -> None:
    platform = spawn(None, "--sandbox", "off")
    deploy(platform, tmp_path, "off", "--timeout", "10s")
    check_invoke_and_publish(platform, "off")
    platform.stop_cleanly()


GATEWAY = """
def main(request, context):
    call = request.json()
    reply = context.invoke(
        "rest-echo",
        method=call["method"],
        path=call["path"],
        query=call.get("query"),
        headers=call.get("headers"),
        json=call.get("json"),
    )
    return {"status": reply.status, "type": reply.headers.get("content-type"),
            "answer": reply.json()}
"""

ECHO = """
def main(request, context):
    status = int(request.query.get("status", "200"))
    return {"method": request.method, "path": request.path, "query": request.query_lists,
            "header": request.headers.get("x-want"), "body": request.json(),
            "forged": request.headers.get("x-fissile-trigger")}, status
"""


def test_invoke_by_method_path_query_and_headers(platform: Platform, tmp_path: Path) -> None:
    for name, code in (("rest-gateway", GATEWAY), ("rest-echo", ECHO)):
        source = write(tmp_path / f"{name.replace('-', '_')}.py", code)
        platform.ok("fn", "create", "--name", name, "--code", str(source), "--timeout", "10s")
    call = {
        "method": "PUT",
        "path": "/items/7",
        "query": {"tag": ["a", "b"], "status": "409"},
        "headers": {"x-want": "yes", "x-fissile-trigger": "timer"},
        "json": {"name": "pen"},
    }
    response = platform.request("POST", "/function/rest-gateway", json=call)
    assert response.status_code == 200, response.text
    body = response.json()
    # The callee's 409 is the caller's to read, not an exception.
    assert (body["status"], body["type"]) == (409, "application/json")
    assert body["answer"] == {
        "method": "PUT",
        "path": "/items/7",  # as a route gives it, not /function/rest-echo/items/7
        "query": {"tag": ["a", "b"], "status": ["409"]},
        "header": "yes",
        "body": {"name": "pen"},
        "forged": None,  # the platform's headers are the platform's to set
    }
    get = {"method": "GET", "path": "/items?tag=c"}
    answer = platform.request("POST", "/function/rest-gateway", json=get).json()["answer"]
    assert answer["method"] == "GET" and answer["path"] == "/items"
    assert answer["query"] == {"tag": ["c"]} and answer["body"] is None
