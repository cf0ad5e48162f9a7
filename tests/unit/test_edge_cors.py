"""A route's CORS policy: preflight answers and the headers of real responses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fissile.models import CORSPolicy
from fissile.router.cors import Cors


def policy(**fields: object) -> Cors:
    return Cors(
        CORSPolicy.model_validate({"origins": ["https://app.example"], **fields}),
        frozenset({"GET", "POST"}),
    )


def test_an_allowed_preflight_gets_every_allow_header() -> None:
    cors = policy(headers=["X-Token"], max_age=60, credentials=True)
    headers = dict(cors.preflight(b"https://app.example", b"POST", b"x-token, Content-Type"))
    assert headers[b"access-control-allow-origin"] == b"https://app.example"
    assert headers[b"access-control-allow-methods"] == b"GET, POST"  # the route's
    assert headers[b"access-control-allow-headers"] == b"x-token"
    assert headers[b"access-control-max-age"] == b"60"
    assert headers[b"access-control-allow-credentials"] == b"true"


@pytest.mark.parametrize(
    ("origin", "method", "requested"),
    [
        (b"https://evil.example", b"POST", b""),
        (b"https://app.example", b"DELETE", b""),
        (b"https://app.example", b"POST", b"x-secret"),
    ],
    ids=["origin", "method", "header"],
)
def test_a_refused_preflight_gets_no_allow_origin(
    origin: bytes, method: bytes, requested: bytes
) -> None:
    headers = dict(policy().preflight(origin, method, requested))
    assert b"access-control-allow-origin" not in headers


def test_any_origin_and_real_responses() -> None:
    cors = Cors(CORSPolicy(origins=["*"]), frozenset())
    assert dict(cors.response(b"https://x.example"))[b"access-control-allow-origin"] == b"*"
    assert cors.response(None) == []
    exact = policy()
    assert dict(exact.response(b"https://APP.example"))[b"vary"] == b"origin"
    assert b"access-control-allow-origin" not in dict(exact.response(b"https://other.example"))


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"origins": ["*"], "credentials": True}, "explicit origins"),
        ({"origins": ["app.example"]}, "scheme://host"),
        ({"origins": ["https://a.example/path"]}, "scheme://host"),
        ({"origins": ["https://a.example"], "methods": ["FETCH"]}, "unknown HTTP method"),
        ({"origins": ["https://a.example"], "headers": ["bad header"]}, "invalid header name"),
        ({"origins": []}, "at least 1"),
    ],
)
def test_bad_policies_are_refused_precisely(fields: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        CORSPolicy.model_validate(fields)
