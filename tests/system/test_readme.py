"""The README's first steps, and the function contracts a user writes against."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from syskit import Platform, write


def test_readme_hello_world(platform: Platform, tmp_path: Path) -> None:
    (tmp_path / "hello.py").write_text('def main(): return "Hello, world!"\n')

    created = platform.ok(
        "fn", "create", "--name", "hello", "--env", "python", "--code", "hello.py", cwd=tmp_path
    )
    assert "hello" in created.out
    routed = platform.ok("route", "create", "--function", "hello", "--url", "/hello")
    assert "/hello" in routed.out

    response = platform.get("/hello")
    assert response.status_code == 200
    assert response.text == "Hello, world!"
    # The same function is reachable directly, without a route.
    assert platform.get("/function/hello").text == "Hello, world!"


def test_native_contracts(platform: Platform, tmp_path: Path) -> None:
    """main(request), main(request, context) and async def, with the request's fields."""
    write(
        tmp_path / "native.py",
        """
        def main(request):
            return {
                "method": request.method,
                "query": request.query,
                "json": request.json(),
                "text": request.text,
                "header": request.headers.get("x-demo"),
            }
        """,
    )
    write(
        tmp_path / "withctx.py",
        """
        def main(request, context):
            return {"function": context.function, "remaining": context.remaining() > 0}
        """,
    )
    write(
        tmp_path / "asyncfn.py",
        """
        import asyncio

        async def main(request):
            await asyncio.sleep(0.01)
            return "async " + request.text, 201, {"x-async": "yes"}
        """,
    )
    platform.ok_many(
        *(
            ("fn", "create", "--name", name, "--code", str(tmp_path / f"{name}.py"))
            for name in ("native", "withctx", "asyncfn")
        )
    )

    response = platform.request(
        "POST", "/function/native?a=1&b=two", json={"k": [1, 2]}, headers={"X-Demo": "d"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["method"] == "POST"
    assert body["query"] == {"a": "1", "b": "two"}
    assert body["json"] == {"k": [1, 2]}
    assert body["text"] == '{"k":[1,2]}'
    assert body["header"] == "d"

    response = platform.get("/function/withctx")
    assert response.json() == {"function": "withctx", "remaining": True}

    response = platform.request("POST", "/function/asyncfn", content=b"body")
    assert response.status_code == 201
    assert response.text == "async body"
    assert response.headers["x-async"] == "yes"


def test_concurrent_requests_all_answered(platform: Platform, tmp_path: Path) -> None:
    write(
        tmp_path / "square.py",
        """
        def main(request):
            n = int(request.query["n"])
            return {"n": n, "square": n * n}
        """,
    )
    platform.ok("fn", "create", "--name", "square", "--code", str(tmp_path / "square.py"))

    def call(n: int) -> tuple[int, object]:
        response = platform.get(f"/function/square?n={n}")
        return response.status_code, response.json()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(40)))
    assert results == [(200, {"n": n, "square": n * n}) for n in range(40)]


def test_readme_function_from_another_platform(platform: Platform, tmp_path: Path) -> None:
    write(
        tmp_path / "lambda_function.py",
        """
        import json

        def lambda_handler(event, context):
            name = (event.get("queryStringParameters") or {}).get("name", "world")
            return {"statusCode": 200, "body": json.dumps({"hello": name})}
        """,
    )
    platform.ok(
        "fn", "create", "--name", "greet", "--code", "lambda_function.py",
        "--entrypoint", "lambda_handler", cwd=tmp_path,
    )  # fmt: skip
    response = platform.get("/function/greet?name=ada")
    assert (response.status_code, response.text) == (200, '{"hello": "ada"}')
    shown = platform.ok("fn", "get", "--name", "greet").out
    assert "Contract:      lambda (the environment's)\n" in shown, shown
