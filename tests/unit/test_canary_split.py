"""Weighted routes and the canary's state machine: the draw follows the weights, a route
with one function has no split, and a canary steps up, finishes at 100 % or rolls back."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click
import pytest
from pydantic import ValidationError
from test_spec_fission import make

from fissile.cli.route import parse_targets
from fissile.controlplane.canaries import decide, weights_for
from fissile.models import CanarySpec, HTTPTriggerSpec
from fissile.router.routes import Route, RouteTable
from fissile.router.split import Split, targets
from fissile.specs.validate import load_specs


def test_a_split_draws_each_function_in_proportion() -> None:
    split = Split({"a": 90, "b": 10})
    assert split.pick(0.0) == "a"
    assert split.pick(0.899) == "a"
    assert split.pick(0.9) == "b"
    assert split.pick(0.999) == "b"
    counts = Counter(split.pick() for _ in range(20_000))
    assert 17_400 < counts["a"] < 18_600, counts


def test_zero_weights_are_never_drawn() -> None:
    split = Split({"a": 1, "off": 0, "b": 1})
    assert split.functions == ("a", "b")
    assert {split.pick(d / 100) for d in range(100)} == {"a", "b"}


def test_one_function_of_positive_weight_is_no_split() -> None:
    assert targets("a", {}) == ("a", None)
    assert targets("a", {"a": 0, "b": 100}) == ("b", None)
    function, split = targets("a", {"a": 30, "b": 70})
    assert function == "b" and split is not None and split.functions == ("a", "b")
    with pytest.raises(ValueError, match="two or more"):
        Split({"a": 5})


def _trigger(**fields: object) -> HTTPTriggerSpec:
    return HTTPTriggerSpec.model_validate({"name": "t", "function": "a", "url": "/x", **fields})


def test_routes_decide_their_split_when_the_table_is_built() -> None:
    plain = Route.from_trigger(_trigger())
    assert plain.split is None and plain.functions == ("a",)
    canary_done = Route.from_trigger(_trigger(function_weights={"a": 0, "b": 100}))
    assert canary_done.split is None and canary_done.function == "b"
    split = Route.from_trigger(_trigger(function_weights={"a": 50, "b": 50}))
    assert split.split is not None and split.functions == ("a", "b")
    match = RouteTable([split]).match("GET", "/x")
    assert match is not None and match.route.split is split.split


def test_trigger_weights_are_checked() -> None:
    with pytest.raises(ValidationError, match="must be one of function_weights"):
        _trigger(function_weights={"b": 10, "c": 90})
    with pytest.raises(ValidationError, match="at least one weight above 0"):
        _trigger(function_weights={"a": 0, "b": 0})
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        _trigger(function_weights={"a": -1, "b": 3})


def test_cli_function_targets() -> None:
    assert parse_targets(("a",)) == ("a", {})
    assert parse_targets(("a=90", "b=10")) == ("a", {"a": 90, "b": 10})
    for bad in (("a", "b=1"), ("a=x",), ("a=1", "a=2"), ("=3",)):
        with pytest.raises(click.BadParameter):
            parse_targets(bad)


def test_a_canary_steps_up_and_finishes_at_100() -> None:
    first = decide(0, 30, 10, requests=0, errors=0)
    assert (first.state, first.weight, first.error_rate) == ("pending", 30, None)
    healthy = decide(30, 30, 10, requests=100, errors=10)  # exactly the threshold: fine
    assert (healthy.state, healthy.weight, healthy.error_rate) == ("pending", 60, 10.0)
    last = decide(90, 30, 10, requests=5, errors=0)
    assert (last.state, last.weight) == ("succeeded", 100)


def test_a_canary_past_its_threshold_rolls_back() -> None:
    failed = decide(20, 10, 10, requests=50, errors=6)
    assert (failed.state, failed.weight) == ("failed", 0)
    assert failed.error_rate == pytest.approx(12.0)
    assert "12.0%" in failed.message and "rolled back" in failed.message


def test_a_canary_without_requests_or_counts_waits() -> None:
    idle = decide(20, 10, 10, requests=0, errors=0)
    assert (idle.state, idle.weight) == ("pending", 20)
    assert "waiting" in idle.message
    blind = decide(20, 10, 10, requests=10, errors=10, measured=False)
    assert (blind.state, blind.weight) == ("pending", 20)


def test_canary_weights_move_only_its_two_functions() -> None:
    spec = CanarySpec(name="c", httptrigger="t", newfunction="b", oldfunction="a")
    assert weights_for(_trigger(), spec, 20) == {"a": 80, "b": 20}
    trigger = _trigger(function_weights={"a": 90, "c": 10})
    assert weights_for(trigger, spec, 40) == {"a": 60, "c": 10, "b": 40}
    with pytest.raises(ValidationError, match="must differ"):
        CanarySpec(name="c", httptrigger="t", newfunction="a", oldfunction="a")


FISSION_SPLIT = """
apiVersion: fission.io/v1
kind: HTTPTrigger
metadata:
  name: split
spec:
  functionref:
    type: function-weights
    functionweights:
      hello: 90
      hello-v2: 10
  method: GET
  relativeurl: /hello
---
apiVersion: fission.io/v1
kind: CanaryConfig
metadata:
  name: hello-canary
spec:
  trigger: split
  newfunction: hello-v2
  oldfunction: hello
  weightincrement: 20
  duration: 1m
  failurethreshold: 5
  failureType: status-code
"""


def test_fission_weights_and_canary_configs_map(tmp_path: Path) -> None:
    loaded = load_specs(make(tmp_path, canary=FISSION_SPLIT))
    assert loaded.errors == []
    assert loaded.warnings == []
    by_name = {r.name: r for r in loaded.resources}
    split = by_name["split"]
    assert split.body["function"] == "hello"
    assert split.body["function_weights"] == {"hello": 90, "hello-v2": 10}
    canary = by_name["hello-canary"]
    assert canary.kind == "canaries"
    assert {k: canary.body[k] for k in CanarySpec.model_fields if k != "labels"} == {
        "name": "hello-canary",
        "httptrigger": "split",
        "newfunction": "hello-v2",
        "oldfunction": "hello",
        "increment_step": 20,
        "increment_interval": 60.0,
        "failure_threshold": 5,
        "failure_type": "status-code",
    }


def test_an_api_key_must_be_allowed_every_function_of_a_split() -> None:
    from typing import cast

    from test_edge_credentials import check, ring

    from fissile.router.auth import Principal, Refusal
    from fissile.router.guard import guard_of

    keys, values = ring(one=["a"], both=["a", "b"])
    spec = _trigger(auth="apikey", function_weights={"a": 90, "b": 10})
    guard = guard_of(spec, keys)
    assert guard is not None and guard.auth is not None
    refused = cast(Refusal, check(guard.auth, [(b"x-api-key", values["one"].encode())]))
    assert refused.status == 403 and "'b'" in refused.message
    allowed = check(guard.auth, [(b"x-api-key", values["both"].encode())])
    assert isinstance(allowed, Principal)
