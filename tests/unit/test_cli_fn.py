"""fissile/cli/fn.py: what `fn update` carries over from the stored function."""

from __future__ import annotations

from fissile.cli.fn import SPEC_FIELDS
from fissile.models import FunctionSpec


def test_update_carries_every_field_of_a_function_spec() -> None:
    # A field missing from SPEC_FIELDS was silently reset by every `fn update`
    # (async_retries was).
    assert set(SPEC_FIELDS) == set(FunctionSpec.model_fields)


def test_the_cli_offers_every_contract_the_models_and_the_runtime_know() -> None:
    from typing import get_args

    from fissile.cli._params import CONTRACTS
    from fissile.models import Contract
    from fissile.runtime.contracts import NAMES

    assert set(CONTRACTS) == set(get_args(Contract)) == set(NAMES)


class _Triggers:
    """What `fn test` asks the API for: the routes."""

    def __init__(self, *triggers: dict[str, object]) -> None:
        self.triggers = [
            {"methods": ["GET"], "url": None, "prefix": None, "webhook_secret": None, **t}
            for t in triggers
        ]

    def list(self, kind: str) -> list[dict[str, object]]:
        assert kind == "httptriggers"
        return self.triggers


def test_fn_test_subpath_goes_through_a_route_only_when_the_router_would_pick_the_functions() -> (
    None
):
    from typing import Any

    from fissile.cli.fn import _routes_to

    client: Any = _Triggers(
        {"name": "one", "function": "students", "url": "/students/{id:[0-9]+}"},
        {"name": "all", "function": "students", "prefix": "/school", "methods": ["*"]},
        {"name": "theirs", "function": "teachers", "prefix": "/school/teachers"},
        {"name": "hook", "function": "students", "url": "/hook", "webhook_secret": "********"},
    )
    assert _routes_to(client, "students", "GET", "/students/42?x=1")
    assert not _routes_to(client, "students", "GET", "/students/ann")  # the constraint
    assert not _routes_to(client, "students", "POST", "/students/42")  # the method
    assert _routes_to(client, "students", "DELETE", "/school/a/b")
    assert not _routes_to(client, "students", "GET", "/school/teachers/1")  # a longer prefix
    assert _routes_to(client, "teachers", "GET", "/school/teachers/1")
    assert not _routes_to(client, "students", "GET", "/hook")  # it would want a signature
    assert not _routes_to(client, "students", "GET", "/elsewhere")
