"""The router's checks of API keys, basic users and JWTs, and of its function doors."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any, cast

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from fissile.models import JWTSettings
from fissile.router.app import Router
from fissile.router.auth import APIKeyAuth, BasicAuth, JWTAuth, KeyRing, Principal, Refusal, new_key
from fissile.router.passwords import hash_password

Headers = list[tuple[bytes, bytes]]


def check(auth: Any, headers: Headers) -> Principal | Refusal:
    result: Principal | Refusal = asyncio.run(auth.check(headers))
    return result


def ring(**keys: list[str]) -> tuple[KeyRing, dict[str, str]]:
    values: dict[str, str] = {}
    records = []
    for name, functions in keys.items():
        value, digest = new_key()
        values[name] = value
        records.append({"name": name, "functions": functions, "hash": digest, "rate": "1/m"})
    keys_ring = KeyRing()
    keys_ring.load(records)
    return keys_ring, values


def test_api_keys() -> None:
    keys, values = ring(mine=["f"], anyone=[])
    auth = APIKeyAuth(keys, "f")
    good = check(auth, [(b"x-api-key", values["mine"].encode())])
    assert isinstance(good, Principal) and good.name == "mine" and good.consumed == b"x-api-key"
    bearer = check(auth, [(b"authorization", b"Bearer " + values["anyone"].encode())])
    assert isinstance(bearer, Principal) and bearer.consumed == b"authorization"
    assert cast(Refusal, check(auth, [])).status == 401
    assert cast(Refusal, check(auth, [(b"x-api-key", b"fsk_nope")])).status == 401
    other = APIKeyAuth(keys, "g")
    assert cast(Refusal, check(other, [(b"x-api-key", values["mine"].encode())])).status == 403


def test_a_key_keeps_its_bucket_while_its_rate_stays() -> None:
    value, digest = new_key()
    keys = KeyRing()
    record = {"name": "k", "functions": [], "hash": digest, "rate": "1/m"}
    keys.load([record])
    first = keys.find(value)
    assert first is not None and first.bucket is not None
    assert first.bucket.take() == 0.0
    keys.load([record, {"name": "other", "functions": [], "hash": new_key()[1]}])
    again = keys.find(value)
    assert again is not None and again.bucket is first.bucket and again.bucket.take() > 0


def basic(user: str, password: str) -> Headers:
    return [(b"authorization", b"Basic " + base64.b64encode(f"{user}:{password}".encode()))]


def test_basic_users() -> None:
    auth = BasicAuth({"al": hash_password("pw")})
    good = check(auth, basic("al", "pw"))
    assert isinstance(good, Principal) and good.name == "al"
    assert isinstance(check(auth, basic("al", "pw")), Principal)  # remembered
    for headers in (basic("al", "nope"), basic("bo", "pw"), [], [(b"authorization", b"Basic %%")]):
        refused = check(auth, headers)
        assert isinstance(refused, Refusal) and refused.status == 401
        assert refused.challenge is not None and refused.challenge.startswith(b"Basic")


SECRET = "0123456789abcdef-0123456789abcdef-secret"


def token(key: Any, algorithm: str = "HS256", kid: str | None = None, **claims: Any) -> Headers:
    body = {"sub": "u1", "exp": int(time.time()) + 60, **claims}
    encoded = jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid} if kid else None)
    return [(b"authorization", f"Bearer {encoded}".encode())]


def test_jwt_with_a_secret_and_claims() -> None:
    auth = JWTAuth(JWTSettings(secret=SECRET, audience="aud", issuer="iss"))
    good = check(auth, token(SECRET, aud="aud", iss="iss", role="x"))
    assert isinstance(good, Principal) and good.name == "u1"
    assert json.loads(good.claims or "")["role"] == "x"
    for headers in (
        token(SECRET, aud="other", iss="iss"),
        token(SECRET, aud="aud", iss="other"),
        token(SECRET, aud="aud", iss="iss", exp=1),
        token("another-secret-of-length-0123456789abcdef", aud="aud", iss="iss"),
        [(b"authorization", b"Bearer abc")],
    ):
        refused = check(auth, headers)
        assert isinstance(refused, Refusal) and "invalid token" in refused.message
    no_exp = jwt.encode({"sub": "u1", "aud": "aud", "iss": "iss"}, SECRET, algorithm="HS256")
    assert isinstance(check(auth, [(b"authorization", f"Bearer {no_exp}".encode())]), Refusal)


def test_jwt_with_a_jwks_file(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**jwk, "kid": "k1"}]}))
    auth = JWTAuth(JWTSettings(jwks_file=str(path)))
    assert isinstance(check(auth, token(key, "RS256", "k1")), Principal)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert isinstance(check(auth, token(other, "RS256", "k1")), Refusal)
    assert isinstance(check(auth, token(SECRET)), Refusal)  # HS256: not an accepted algorithm


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({}, "exactly one of secret or jwks_file"),
        ({"secret": "short"}, "at least 32"),
        ({"jwks_file": "relative.json"}, "absolute"),
        ({"secret": SECRET, "algorithms": ["RS256"]}, "does not fit a secret"),
    ],
)
def test_bad_jwt_settings(fields: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        JWTSettings.model_validate(fields)


def router(door: str) -> Router:
    made = Router(cast(Any, None), door=door, token="platform-token")
    made._door_locked = frozenset({"locked"})
    return made


@pytest.mark.parametrize(
    ("door", "function", "headers", "expected"),
    [
        ("auto", "free", [], None),
        ("auto", "locked", [], 401),
        ("auto", "locked", [(b"x-fissile-token", b"platform-token")], "token"),
        ("auto", "locked", [(b"authorization", b"Bearer platform-token")], 401),
        ("open", "locked", [], None),
        ("token", "free", [], 401),
        ("token", "free", [(b"x-fissile-token", b"wrong")], 401),
        ("off", "free", [], 404),
        ("off", "free", [(b"x-fissile-token", b"platform-token")], "token"),
    ],
)
def test_function_doors(door: str, function: str, headers: Headers, expected: object) -> None:
    result = router(door)._door(function, headers)
    if expected is None:
        assert result is None
    elif isinstance(expected, int):
        assert isinstance(result, Refusal) and result.status == expected
    else:
        assert isinstance(result, Principal) and result.auth == expected


def test_an_api_key_opens_a_token_door_for_its_functions_only() -> None:
    door = router("token")
    keys, values = ring(k=["locked"])
    door.keys = keys
    header = [(b"x-api-key", values["k"].encode())]
    assert isinstance(door._door("locked", header), Principal)
    refused = door._door("free", header)
    assert isinstance(refused, Refusal) and refused.status == 403


def test_guards_are_made_only_for_routes_that_ask(tmp_path: Path) -> None:
    from fissile.models import HTTPTriggerSpec
    from fissile.router.guard import guard_of

    plain = HTTPTriggerSpec(name="r", function="f", url="/r")
    assert guard_of(plain, KeyRing()) is None
    limited = guard_of(plain.model_copy(update={"rate": "5/s"}), KeyRing())
    assert limited is not None and limited.bucket is not None and not limited.protects
    hook = guard_of(plain.model_copy(update={"webhook_secret": "s" * 16}), KeyRing())
    assert hook is not None and hook.protects
    # A JWKS file gone since the route was made: the route refuses (503), never opens.
    missing = JWTSettings(jwks_file=str(tmp_path / "gone.json"))
    broken = guard_of(plain.model_copy(update={"auth": "jwt", "jwt": missing}), KeyRing())
    assert broken is not None and broken.broken is not None and broken.auth is None
