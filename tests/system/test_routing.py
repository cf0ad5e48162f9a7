"""The router: path parameters, constraints, prefixes, methods, unknown paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from syskit import Platform, error_of, write

ECHO = """
def main(request):
    return {
        "params": request.params,
        "path": request.path,
        "method": request.method,
        "query": request.query,
    }
"""


@pytest.fixture(scope="module")
def routed(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Platform:
    source = write(tmp_path_factory.mktemp("routing") / "router_echo.py", ECHO)
    platform.ok("fn", "create", "--name", "router-echo", "--code", str(source))
    platform.ok_many(
        *(
            ("route", "create", "--function", "router-echo", *args)
            for args in (
                ("--url", "/students/{id}"),
                ("--url", "/courses/{id:[0-9]+}"),
                ("--url", "/items/{name}", "--method", "PUT", "--method", "DELETE"),
                ("--prefix", "/api/v1", "--method", "GET", "--method", "POST"),
            )
        )
    )
    return platform


def test_path_parameter(routed: Platform) -> None:
    response = routed.get("/students/42?fields=name")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "params": {"id": "42"},
        "path": "/students/42",
        "method": "GET",
        "query": {"fields": "name"},
    }
    assert routed.get("/students/ann").json()["params"] == {"id": "ann"}


def test_constrained_parameter(routed: Platform) -> None:
    response = routed.get("/courses/123")
    assert response.status_code == 200, response.text
    assert response.json()["params"] == {"id": "123"}

    for path in ("/courses/abc", "/courses/12a"):
        response = routed.get(path)
        assert response.status_code == 404, (path, response.text)
        assert error_of(response)["code"] == "no_route"


def test_prefix_route(routed: Platform) -> None:
    for path in ("/api/v1", "/api/v1/", "/api/v1/users", "/api/v1/users/7/orders"):
        response = routed.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["path"] == path
    response = routed.request("POST", "/api/v1/users")
    assert response.status_code == 200
    assert response.json()["method"] == "POST"
    # A prefix covers whole path segments only.
    assert routed.get("/api/v1x").status_code == 404
    assert routed.get("/api").status_code == 404


def test_method_mismatch_is_405_with_allow(routed: Platform) -> None:
    response = routed.request("POST", "/students/1")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    error = error_of(response)
    assert error["code"] == "method_not_allowed"
    assert "POST" in error["message"]

    response = routed.get("/items/pen")
    assert response.status_code == 405
    assert sorted(m.strip() for m in response.headers["allow"].split(",")) == ["DELETE", "PUT"]
    assert routed.request("PUT", "/items/pen").json()["params"] == {"name": "pen"}

    response = routed.request("DELETE", "/api/v1/users")
    assert response.status_code == 405
    assert sorted(m.strip() for m in response.headers["allow"].split(",")) == ["GET", "POST"]


def test_unknown_path_is_404_json(routed: Platform) -> None:
    response = routed.get("/no/such/path")
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "no_route"
    assert "/no/such/path" in error["message"]


def test_direct_call_with_subpath(routed: Platform) -> None:
    response = routed.request("PATCH", "/function/router-echo/deep/path?x=1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["method"] == "PATCH"
    assert body["path"].endswith("/deep/path")
    assert body["query"] == {"x": "1"}


def test_fn_test_subpath_is_seen_as_its_route_gives_it(routed: Platform) -> None:
    # A function routing on request.path answered 404 to `fn test --subpath /students/42`:
    # it was handed /function/router-echo/students/42.
    result = routed.ok("fn", "test", "--name", "router-echo", "--subpath", "/students/42?a=1")
    assert json.loads(result.out) == {
        "params": {"id": "42"},
        "path": "/students/42",
        "method": "GET",
        "query": {"a": "1"},
    }
    put = routed.ok("fn", "test", "--name", "router-echo", "-X", "PUT", "--subpath", "items/x")
    assert json.loads(put.out)["path"] == "/items/x"
    prefixed = routed.ok("fn", "test", "--name", "router-echo", "--subpath", "/api/v1/a/b")
    assert json.loads(prefixed.out)["path"] == "/api/v1/a/b"
    queued = routed.ok("fn", "test", "--name", "router-echo", "--async", "--subpath", "/students/5")
    assert queued.out.strip() and "status:" in queued.err, queued
    # No route of the function serves it (the method, or the path): the direct call's path.
    for args in (("-X", "PATCH", "--subpath", "/items/x"), ("--subpath", "/nowhere")):
        result = routed.ok("fn", "test", "--name", "router-echo", *args)
        path = args[-1]
        assert json.loads(result.out)["path"] == f"/function/router-echo{path}"
        assert f"the function sees the direct call's path /function/router-echo{path}" in (
            result.err
        )


def test_direct_call_of_unknown_function_is_404_json(routed: Platform) -> None:
    response = routed.get("/function/no-such-function")
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "function_not_found"
    assert "no-such-function" in error["message"]


def test_route_to_missing_function_is_refused(routed: Platform) -> None:
    result = routed.cli("route", "create", "--function", "ghost", "--url", "/ghost")
    assert result.rc == 1, result
    assert "ghost" in result.err
    assert routed.get("/ghost").status_code == 404


def test_conflicting_route_is_refused(routed: Platform) -> None:
    # Same shape as /students/{id} with another parameter name: the same paths.
    result = routed.cli("route", "create", "--function", "router-echo", "--url", "/students/{sid}")
    assert result.rc == 1, result
    assert "already routes" in result.err


def test_route_delete_stops_serving(routed: Platform) -> None:
    routed.ok("route", "create", "--name", "temp-route", "--function", "router-echo", "--url", "/t")
    assert routed.get("/t").status_code == 200
    routed.ok("route", "delete", "--name", "temp-route")
    assert routed.get("/t").status_code == 404


def test_methods_split_between_functions(platform: Platform, tmp_path: Path) -> None:
    for name in ("reader", "writer"):
        write(
            tmp_path / f"{name}.py", f"def main(request):\n    return '{name} ' + request.method\n"
        )
    platform.ok_many(
        ("fn", "create", "--name", "split-reader", "--code", str(tmp_path / "reader.py")),
        ("fn", "create", "--name", "split-writer", "--code", str(tmp_path / "writer.py")),
    )
    platform.ok_many(
        ("route", "create", "--function", "split-reader", "--url", "/split", "--method", "GET"),
        ("route", "create", "--function", "split-writer", "--url", "/split", "--method", "POST"),
    )
    assert platform.get("/split").text == "reader GET"
    assert platform.request("HEAD", "/split").status_code == 200
    assert platform.request("POST", "/split").text == "writer POST"
    response = platform.request("DELETE", "/split")
    assert response.status_code == 405
    assert sorted(m.strip() for m in response.headers["allow"].split(",")) == ["GET", "POST"]


def test_most_specific_route_wins(platform: Platform, tmp_path: Path) -> None:
    for name in ("me", "byid", "rest"):
        write(tmp_path / f"{name}.py", f"def main(request):\n    return '{name}'\n")
    platform.ok_many(
        *(
            ("fn", "create", "--name", f"users-{name}", "--code", str(tmp_path / f"{name}.py"))
            for name in ("me", "byid", "rest")
        )
    )
    platform.ok_many(
        ("route", "create", "--function", "users-me", "--url", "/users/me"),
        ("route", "create", "--function", "users-byid", "--url", "/users/{id}"),
        ("route", "create", "--function", "users-rest", "--prefix", "/users"),
    )
    answers = {path: platform.get(path).text for path in ("/users/me", "/users/7", "/users/7/x")}
    assert answers == {"/users/me": "me", "/users/7": "byid", "/users/7/x": "rest"}
    assert platform.get("/users").text == "rest"


def test_client_cannot_forge_platform_headers(routed: Platform) -> None:
    forged = {
        "X-Fissile-Params": '{"id": "evil"}',
        "X-Fissile-Params-id": "evil",
        "X-Fissile-Function": "other",
    }
    assert routed.get("/students/real", headers=forged).json()["params"] == {"id": "real"}
    assert routed.get("/function/router-echo", headers=forged).json()["params"] == {}


def test_route_update_moves_the_url(routed: Platform, tmp_path: Path) -> None:
    routed.ok("route", "create", "--name", "movable", "--function", "router-echo", "--url", "/m1")
    assert routed.get("/m1").status_code == 200
    routed.ok("route", "update", "--name", "movable", "--url", "/m2", "--method", "POST")
    assert routed.get("/m1").status_code == 404
    assert routed.request("POST", "/m2").json()["path"] == "/m2"
    assert routed.get("/m2").status_code == 405
