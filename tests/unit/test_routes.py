"""fissile/router/routes.py: the route table and route conflicts."""

from __future__ import annotations

from typing import Any

import pytest

from fissile.models import HTTPTriggerSpec
from fissile.router.routes import MethodNotAllowed, Route, RouteTable, find_conflict


def route(name: str, function: str | None = None, **fields: Any) -> Route:
    spec = HTTPTriggerSpec(name=name, function=function or name, **fields)
    return Route.from_trigger(spec)


def served_by(table: RouteTable, method: str, path: str) -> tuple[str, dict[str, str]] | None:
    match = table.match(method, path)
    return None if match is None else (match.route.trigger, match.params)


def test_from_trigger() -> None:
    r = route("t", "f", url="/a/", methods=["get", "post"])
    assert (r.trigger, r.function, r.path, r.prefix) == ("t", "f", "/a", False)
    assert r.methods == frozenset({"GET", "POST"})
    assert route("p", prefix="/static").prefix is True
    assert route("any", url="/x", methods=["ANY"]).methods == frozenset()


def test_exact_match() -> None:
    table = RouteTable([route("hello", url="/hello"), route("root", url="/")])
    assert served_by(table, "GET", "/hello") == ("hello", {})
    assert served_by(table, "GET", "/") == ("root", {})
    assert served_by(table, "GET", "/hello/world") is None
    assert served_by(table, "GET", "/hell") is None


def test_empty_table() -> None:
    assert RouteTable().match("GET", "/") is None


def test_trailing_slash_is_ignored() -> None:
    table = RouteTable([route("hello", url="/hello"), route("item", url="/items/{id}")])
    assert served_by(table, "GET", "/hello/") == ("hello", {})
    assert served_by(table, "GET", "/items/7/") == ("item", {"id": "7"})


def test_params() -> None:
    table = RouteTable([route("s", url="/students/{id}/courses/{course}")])
    assert served_by(table, "GET", "/students/42/courses/math") == (
        "s",
        {"id": "42", "course": "math"},
    )
    assert served_by(table, "GET", "/students/42/courses") is None
    assert served_by(table, "GET", "/students/42/courses/math/x") is None


def test_constrained_params_win_over_free_ones() -> None:
    table = RouteTable(
        [route("by-name", url="/items/{name}"), route("by-id", url="/items/{id:[0-9]+}")]
    )
    assert served_by(table, "GET", "/items/42") == ("by-id", {"id": "42"})
    assert served_by(table, "GET", "/items/abc") == ("by-name", {"name": "abc"})
    # The pattern must match the whole segment.
    assert served_by(table, "GET", "/items/42abc") == ("by-name", {"name": "42abc"})


def test_constrained_param_alone_does_not_match_other_segments() -> None:
    table = RouteTable([route("by-id", url="/items/{id:[0-9]+}")])
    assert served_by(table, "GET", "/items/12") == ("by-id", {"id": "12"})
    assert served_by(table, "GET", "/items/x12") is None


def test_literal_segments_win_over_params_at_each_level() -> None:
    table = RouteTable([route("param", url="/a/{x}/c"), route("literal", url="/a/b/{y}")])
    assert served_by(table, "GET", "/a/b/c") == ("literal", {"y": "c"})
    assert served_by(table, "GET", "/a/z/c") == ("param", {"x": "z"})


def test_params_with_different_names_at_the_same_position() -> None:
    table = RouteTable([route("x", url="/a/{id}/x"), route("y", url="/a/{key}/y")])
    assert served_by(table, "GET", "/a/1/x") == ("x", {"id": "1"})
    assert served_by(table, "GET", "/a/2/y") == ("y", {"key": "2"})


def test_prefix() -> None:
    table = RouteTable([route("static", prefix="/static")])
    assert served_by(table, "GET", "/static") == ("static", {})
    assert served_by(table, "GET", "/static/") == ("static", {})
    assert served_by(table, "GET", "/static/css/site.css") == ("static", {})
    assert served_by(table, "GET", "/staticky") is None
    assert served_by(table, "GET", "/") is None


def test_longest_prefix_wins_and_root_prefix_catches_all() -> None:
    table = RouteTable(
        [route("all", prefix="/"), route("api", prefix="/api"), route("v2", prefix="/api/v2")]
    )
    assert served_by(table, "GET", "/api/v2/users") == ("v2", {})
    assert served_by(table, "GET", "/api/v1/users") == ("api", {})
    assert served_by(table, "GET", "/other") == ("all", {})
    assert served_by(table, "GET", "/") == ("all", {})


def test_priority_exact_then_param_then_prefix() -> None:
    table = RouteTable(
        [
            route("prefix", prefix="/users"),
            route("param", url="/users/{id}"),
            route("exact", url="/users/me"),
        ]
    )
    assert served_by(table, "GET", "/users/me") == ("exact", {})
    assert served_by(table, "GET", "/users/7") == ("param", {"id": "7"})
    assert served_by(table, "GET", "/users/7/photos") == ("prefix", {})
    assert served_by(table, "GET", "/users") == ("prefix", {})


def test_method_not_allowed_lists_allowed_methods() -> None:
    table = RouteTable(
        [
            route("read", url="/items/{id}", methods=["GET"]),
            route("write", url="/items/{id}", methods=["PUT", "DELETE"]),
        ]
    )
    assert served_by(table, "PUT", "/items/1") == ("write", {"id": "1"})
    with pytest.raises(MethodNotAllowed) as info:
        table.match("POST", "/items/1")
    assert info.value.allowed == ["DELETE", "GET", "PUT"]


def test_method_not_allowed_only_when_the_path_exists() -> None:
    table = RouteTable([route("read", url="/items", methods=["GET"])])
    assert table.match("POST", "/nothing") is None
    with pytest.raises(MethodNotAllowed):
        table.match("POST", "/items")


def test_a_wrong_method_falls_through_to_a_route_that_allows_it() -> None:
    table = RouteTable(
        [
            route("exact-get", url="/api/items", methods=["GET"]),
            route("catch-all", prefix="/api", methods=["ANY"]),
        ]
    )
    assert served_by(table, "GET", "/api/items") == ("exact-get", {})
    assert served_by(table, "POST", "/api/items") == ("catch-all", {})


def test_head_is_allowed_on_get_routes() -> None:
    table = RouteTable([route("read", url="/items", methods=["GET"])])
    assert served_by(table, "HEAD", "/items") == ("read", {})
    post_only = RouteTable([route("write", url="/items", methods=["POST"])])
    with pytest.raises(MethodNotAllowed) as info:
        post_only.match("HEAD", "/items")
    assert info.value.allowed == ["POST"]


def test_any_method_route() -> None:
    table = RouteTable([route("any", url="/x", methods=["ANY"])])
    for method in ("GET", "POST", "DELETE", "OPTIONS", "PATCH"):
        assert served_by(table, method, "/x") == ("any", {})


def test_explicit_head_route_wins_over_implicit_head_of_get() -> None:
    table = RouteTable(
        [
            route("get", url="/items", methods=["GET"]),
            route("head", url="/items", methods=["HEAD"]),
        ]
    )
    assert served_by(table, "HEAD", "/items") == ("head", {})


# --- conflicts -----------------------------------------------------------------------------


def test_conflict_same_path_same_method() -> None:
    existing = [route("a", url="/x", methods=["GET", "POST"])]
    clash = find_conflict(route("b", url="/x/", methods=["POST"]), existing)
    assert clash is not None and clash.trigger == "a"


def test_no_conflict_for_disjoint_methods_or_paths() -> None:
    existing = [route("a", url="/x", methods=["GET"])]
    assert find_conflict(route("b", url="/x", methods=["POST"]), existing) is None
    assert find_conflict(route("c", url="/y", methods=["GET"]), existing) is None


def test_any_method_conflicts_with_every_method() -> None:
    existing = [route("a", url="/x", methods=["DELETE"])]
    assert find_conflict(route("b", url="/x", methods=["ANY"]), existing) is not None
    existing = [route("a", url="/x", methods=["ANY"])]
    assert find_conflict(route("b", url="/x", methods=["GET"]), existing) is not None


def test_param_names_do_not_matter_for_conflicts_but_patterns_do() -> None:
    existing = [route("a", url="/items/{id}")]
    clash = find_conflict(route("b", url="/items/{key}"), existing)
    assert clash is not None and clash.trigger == "a"
    assert find_conflict(route("c", url="/items/{id:[0-9]+}"), existing) is None
    constrained = [route("d", url="/items/{id:[0-9]+}")]
    assert find_conflict(route("e", url="/items/{n:[0-9]+}"), constrained) is not None


def test_prefix_and_url_on_the_same_path_do_not_conflict() -> None:
    existing = [route("a", url="/static")]
    assert find_conflict(route("b", prefix="/static"), existing) is None
    assert find_conflict(route("c", prefix="/static"), [route("d", prefix="/static")]) is not None


def test_a_trigger_does_not_conflict_with_itself() -> None:
    existing = [route("a", url="/x")]
    assert find_conflict(route("a", url="/x"), existing) is None


def test_a_pattern_matching_slashes_spans_segments_as_in_gorilla_mux() -> None:
    table = RouteTable(
        [
            route("chat", url=r"/chat/{path:[a-zA-Z0-9\.\/]+}"),
            route("raw", url="/files/{name:.+}/raw"),
            route("one", url="/one/{id:[0-9]+}"),
        ]
    )
    assert served_by(table, "GET", "/chat/a/b.txt") == ("chat", {"path": "a/b.txt"})
    assert served_by(table, "GET", "/chat/x") == ("chat", {"path": "x"})
    assert served_by(table, "GET", "/chat/a/b-c") is None
    assert served_by(table, "GET", "/files/a/b/raw") == ("raw", {"name": "a/b"})
    assert served_by(table, "GET", "/files/a/raw/raw") == ("raw", {"name": "a/raw"})
    assert served_by(table, "GET", "/one/42/43") is None
    assert served_by(table, "GET", "/one/42") == ("one", {"id": "42"})


def test_a_pattern_with_a_slash_is_a_valid_trigger_url() -> None:
    spec = HTTPTriggerSpec(name="t", function="f", url="/a/{rest:[a-z]+/[0-9]+}/b")
    assert spec.url == "/a/{rest:[a-z]+/[0-9]+}/b"
    table = RouteTable([Route.from_trigger(spec)])
    assert served_by(table, "GET", "/a/x/1/b") == ("t", {"rest": "x/1"})
    with pytest.raises(ValueError, match="invalid path segment"):
        HTTPTriggerSpec(name="t", function="f", url="/a/{rest:[a-z]+}{x}")


def test_the_routers_resolutions_follow_a_replaced_table() -> None:
    """``Router._resolve`` remembers route matches for the table in use only."""
    from fissile.router.app import Router

    executor: Any = type("Executor", (), {"functions": {}})()
    router = Router(executor)
    router._add(HTTPTriggerSpec(name="a", function="fa", url="/a"))
    router.table = RouteTable(router._routes.values())
    assert router._resolve("GET", "/a") == ("fa", {}, None, "a")
    assert router._resolve("GET", "/a") == ("fa", {}, None, "a")  # remembered
    router._add(HTTPTriggerSpec(name="a", function="fb", url="/a"))
    router.table = RouteTable(router._routes.values())
    assert router._resolve("GET", "/a") == ("fb", {}, None, "a")
    router._add(HTTPTriggerSpec(name="p", function="fp", prefix="/shop"))
    router.table = RouteTable(router._routes.values())
    assert router._resolve("GET", "/shop/cart") == ("fp", {}, "/shop", "p")
    router._add(HTTPTriggerSpec(name="a", function="fb", url="/a", webhook_secret="s3cret-key"))
    router.table = RouteTable(router._routes.values())
    assert router._resolve("GET", "/a") is None  # webhooks take the ASGI path
    assert router._resolve("GET", "/nowhere") is None
