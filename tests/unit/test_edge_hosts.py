"""Routes bound to a host, as the route table matches them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fissile.models import HTTPTriggerSpec
from fissile.router.routes import MethodNotAllowed, Route, RouteTable, find_conflict, request_host


def route(name: str, host: str | None, methods: tuple[str, ...] = ("GET",)) -> Route:
    return Route(name, f"fn-{name}", frozenset(methods), "/site", host=host)


def test_a_host_route_comes_first_and_others_serve_any_host() -> None:
    table = RouteTable([route("any", None), route("a", "a.example.com")])
    assert table.hosted
    assert table.match("GET", "/site", "a.example.com").route.trigger == "a"  # type: ignore[union-attr]
    assert table.match("GET", "/site", "b.example.com").route.trigger == "any"  # type: ignore[union-attr]
    assert table.match("GET", "/site").route.trigger == "any"  # type: ignore[union-attr]
    assert not RouteTable([route("any", None)]).hosted


def test_a_host_only_route_is_not_served_elsewhere() -> None:
    table = RouteTable([route("a", "a.example.com", ("POST",))])
    assert table.match("GET", "/site", "b.example.com") is None
    with pytest.raises(MethodNotAllowed) as refused:
        table.match("GET", "/site", "a.example.com")
    assert refused.value.allowed == ["POST"]


def test_methods_of_both_tables_are_allowed() -> None:
    table = RouteTable([route("any", None, ("PUT",)), route("a", "a.example.com", ("POST",))])
    with pytest.raises(MethodNotAllowed) as refused:
        table.match("GET", "/site", "a.example.com")
    assert refused.value.allowed == ["POST", "PUT"]


def test_the_same_path_on_another_host_is_no_conflict() -> None:
    assert find_conflict(route("a", "a.example.com"), [route("any", None)]) is None
    assert find_conflict(route("a2", "a.example.com"), [route("a", "a.example.com")]) is not None


@pytest.mark.parametrize(
    ("header", "host"),
    [
        (b"API.Example.com:8443", "api.example.com"),
        (b"a.example.", "a.example"),
        (b"[::1]:80", "[::1]"),
    ],
)
def test_request_hosts(header: bytes, host: str) -> None:
    assert request_host(header) == host


def test_host_names_are_checked() -> None:
    spec = HTTPTriggerSpec(name="r", function="f", url="/r", host="API.Example.COM")
    assert spec.host == "api.example.com"
    for bad in ("https://a.example", "a.example:80", "a..b", "-a.example"):
        with pytest.raises(ValidationError, match="host name"):
            HTTPTriggerSpec(name="r", function="f", url="/r", host=bad)
