"""Revision targets of weighted routes (fissile/revision_targets.py) and where they are read:
the model, the route table, the CLI's --function values."""

from __future__ import annotations

import click
import pytest
from pydantic import ValidationError

from fissile import revision_targets as rt
from fissile.cli.route import parse_targets
from fissile.models import HTTPTriggerSpec
from fissile.router.routes import Route


def test_targets_parse_and_resolve() -> None:
    assert rt.parse("a@3") == ("a", 3)
    assert rt.parse("my-fn@12") == ("my-fn", 12)
    for plain in ("a", "a-r3", "a@0", "a@", "@3", "A@3", "a@03", "a@-1"):
        assert rt.parse(plain) is None, plain
    assert rt.resolve("a@3") == "a-r3"
    assert rt.resolve("a") == "a"
    assert rt.base("a@3") == rt.base("a") == "a"
    assert rt.fits("a@3")
    assert not rt.fits("x" * 62 + "@3")


def _route(weights: dict[str, int], function: str = "a") -> HTTPTriggerSpec:
    return HTTPTriggerSpec(name="r", url="/r", function=function, function_weights=weights)


def test_the_model_takes_revision_targets_in_weights_only() -> None:
    assert _route({"a": 90, "a@3": 10}).function_weights == {"a": 90, "a@3": 10}
    with pytest.raises(ValidationError):
        _route({"a": 90, "a@x": 10})
    with pytest.raises(ValidationError):
        _route({"a@3": 10}, function="a@3")  # the route's own function is a plain one


def test_the_route_table_splits_to_revision_functions() -> None:
    route = Route.from_trigger(_route({"a": 30, "a@3": 70}))
    assert route.function == "a-r3"  # the heaviest
    assert route.split is not None
    assert set(route.split.functions) == {"a", "a-r3"}
    single = Route.from_trigger(_route({}))
    assert (single.function, single.split) == ("a", None)


def test_cli_targets() -> None:
    assert parse_targets(("a@3=10", "a=90")) == ("a", {"a@3": 10, "a": 90})
    with pytest.raises(click.BadParameter, match="not a revision"):
        parse_targets(("a@3=10", "a@2=90"))


def test_an_api_key_for_a_function_may_call_its_revisions() -> None:
    from typing import cast

    from test_edge_credentials import check, ring

    from fissile.router.auth import Principal, Refusal
    from fissile.router.guard import guard_of

    keys, values = ring(one=["a"], other=["b"])
    spec = HTTPTriggerSpec(
        name="r", url="/r", function="a", function_weights={"a": 90, "a@3": 10}, auth="apikey"
    )
    guard = guard_of(spec, keys)
    assert guard is not None and guard.auth is not None
    allowed = check(guard.auth, [(b"x-api-key", values["one"].encode())])
    assert isinstance(allowed, Principal)
    refused = cast(Refusal, check(guard.auth, [(b"x-api-key", values["other"].encode())]))
    assert refused.status == 403
