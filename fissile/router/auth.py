"""Who is calling a route: API keys, basic-auth users and JWTs, checked by the router before
anything reaches the function. The function learns the caller from ``X-Fissile-Principal``
(and ``X-Fissile-Auth``, and a JWT's claims in ``X-Fissile-Claims``), which the router sets
itself: a client's copy of any ``X-Fissile-*`` header never reaches a function."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from fissile.models import APIKeySpec, JWTSettings, parse_rate
from fissile.router.passwords import verify_password
from fissile.router.ratelimit import Buckets, TokenBucket, local_bucket

Headers = list[tuple[bytes, bytes]]

KEY_PREFIX = "fsk_"
API_KEY_HEADER = b"x-api-key"


@dataclass(frozen=True, slots=True)
class Principal:
    auth: str  # apikey, basic, jwt or token (the platform's token, at the function door)
    name: str
    claims: str | None = None  # a JWT's claims, as JSON
    key: Key | None = None  # the API key used, for its rate limit
    #: The request header that carried the credentials: the router's to read, not passed on.
    consumed: bytes | None = None

    def headers(self) -> Headers:
        """The metadata lines the function receives."""
        lines = [
            (b"x-fissile-auth", self.auth.encode()),
            (b"x-fissile-principal", _header_safe(self.name)),
        ]
        if self.claims is not None:
            lines.append((b"x-fissile-claims", _header_safe(self.claims)))
        return lines


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # 401: no or bad credentials; 403: good ones, not for this
    code: str
    message: str
    challenge: bytes | None = None  # WWW-Authenticate


# -- API keys -------------------------------------------------------------------------------


def new_key() -> tuple[str, str]:
    """A new key's value (shown once) and the hash the platform keeps of it."""
    value = KEY_PREFIX + secrets.token_urlsafe(32)
    return value, key_hash(value)


def key_hash(value: str) -> str:
    # A key is 256 random bits: a fast hash is as safe as a slow one against guessing, and
    # lets the router find a key with one dict lookup.
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(slots=True)
class Key:
    name: str
    functions: frozenset[str]  # empty: any function
    bucket: TokenBucket | None

    def allows(self, function: str) -> bool:
        return not self.functions or function in self.functions


class KeyRing:
    """The API keys the router knows, by the hash of their value; rebuilt when keys change
    (a key's bucket is kept while its rate stays the same)."""

    def __init__(self) -> None:
        self._by_hash: dict[str, Key] = {}
        #: How the router makes its rate buckets (its keys' and its routes'): in a cluster,
        #: buckets that share their counts with the other routers'.
        self.buckets: Buckets = local_bucket
        self._rates: dict[str, tuple[str | None, int | None, TokenBucket | None]] = {}

    def load(self, records: Iterable[dict[str, Any]]) -> None:
        by_hash: dict[str, Key] = {}
        rates: dict[str, tuple[str | None, int | None, TokenBucket | None]] = {}
        for data in records:
            spec = APIKeySpec.model_validate({k: v for k, v in data.items() if k in _SPEC_FIELDS})
            old = self._rates.get(spec.name)
            if old is not None and old[:2] == (spec.rate, spec.burst):
                bucket = old[2]
            else:
                bucket = (
                    None
                    if spec.rate is None
                    else self.buckets(f"apikey/{spec.name}", parse_rate(spec.rate), spec.burst)
                )
            rates[spec.name] = (spec.rate, spec.burst, bucket)
            by_hash[data["hash"]] = Key(spec.name, frozenset(spec.functions), bucket)
        self._by_hash, self._rates = by_hash, rates

    def find(self, value: str) -> Key | None:
        if not value.startswith(KEY_PREFIX):
            return None
        return self._by_hash.get(key_hash(value))


_SPEC_FIELDS = frozenset(APIKeySpec.model_fields)


def key_value(headers: Headers) -> str | None:
    """An API key sent as ``X-API-Key`` or as a bearer token."""
    for name, value in headers:
        if name == API_KEY_HEADER:
            return value.decode("latin-1").strip()
    token = bearer(headers)
    return token if token is not None and token.startswith(KEY_PREFIX) else None


def bearer(headers: Headers) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class APIKeyAuth:
    challenge = b'Bearer realm="fissile"'

    def __init__(self, keys: KeyRing, function: str, also: tuple[str, ...] = ()) -> None:
        self.keys = keys
        self.function = function
        # A split route's other functions: a key must be allowed to call each of them.
        self.functions = (function, *(f for f in also if f != function))

    async def check(self, headers: Headers) -> Principal | Refusal:
        value = key_value(headers)
        if value is None:
            return Refusal(
                401, "unauthorized", "an API key is required (X-API-Key)", self.challenge
            )
        key = self.keys.find(value)
        if key is None:
            return Refusal(401, "unauthorized", "unknown API key", self.challenge)
        for function in self.functions:
            if not key.allows(function):
                return Refusal(
                    403, "forbidden", f"API key {key.name!r} may not call function {function!r}"
                )
        return Principal("apikey", key.name, key=key, consumed=carrier(headers))


def carrier(headers: Headers) -> bytes:
    """The header an API key came in."""
    return API_KEY_HEADER if any(n == API_KEY_HEADER for n, _ in headers) else b"authorization"


# -- basic ----------------------------------------------------------------------------------


class BasicAuth:
    challenge = b'Basic realm="fissile", charset="UTF-8"'
    # Verified credentials remembered, so that a client sending the same header on every
    # request pays scrypt once (keyed by an HMAC of the header, never the password itself).
    MAX_REMEMBERED = 1024

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self._pepper = secrets.token_bytes(16)
        self._verified: dict[bytes, str] = {}

    async def check(self, headers: Headers) -> Principal | Refusal:
        raw = None
        for name, value in headers:
            if name == b"authorization":
                raw = value.strip()
                break
        if raw is None or raw[:6].lower() != b"basic ":
            return Refusal(401, "unauthorized", "basic credentials are required", self.challenge)
        remembered = hmac.new(self._pepper, raw, hashlib.sha256).digest()
        user = self._verified.get(remembered)
        if user is not None:
            return Principal("basic", user, consumed=b"authorization")
        try:
            decoded = base64.b64decode(raw[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return Refusal(401, "unauthorized", "malformed basic credentials", self.challenge)
        user, colon, password = decoded.partition(":")
        stored = self.users.get(user)
        # An unknown user costs the same scrypt run as a wrong password: timing tells nothing.
        ok = await asyncio.to_thread(verify_password, password, stored or _DUMMY_HASH)
        if not colon or stored is None or not ok:
            return Refusal(401, "unauthorized", "wrong user name or password", self.challenge)
        if len(self._verified) >= self.MAX_REMEMBERED:
            self._verified.clear()
        self._verified[remembered] = user
        return Principal("basic", user, consumed=b"authorization")


# A hash of a password nobody knows, checked for unknown users.
_DUMMY_HASH = "scrypt$14$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


# -- JWT ------------------------------------------------------------------------------------


class JWTAuth:
    challenge = b'Bearer realm="fissile"'

    def __init__(self, settings: JWTSettings) -> None:
        self.settings = settings
        self._keys: dict[str | None, Any] = {}
        if settings.secret is not None:
            self.algorithms = settings.algorithms or ["HS256"]
            self._keys[None] = settings.secret
        else:
            assert settings.jwks_file is not None
            self.algorithms = settings.algorithms or ["RS256", "ES256"]
            # Read once, when the route is loaded: `route update` (or a restart) reads it again.
            jwks = jwt.PyJWKSet.from_json(Path(settings.jwks_file).read_text())
            for key in jwks.keys:
                self._keys[key.key_id] = key.key

    async def check(self, headers: Headers) -> Principal | Refusal:
        token = bearer(headers)
        if token is None:
            return Refusal(401, "unauthorized", "a bearer token is required", self.challenge)
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) if kid in self._keys else self._keys.get(None)
            if key is None and len(self._keys) == 1:
                key = next(iter(self._keys.values()))
            if key is None:
                raise jwt.InvalidKeyError(f"no key with kid {kid!r}")
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                options={"require": ["exp"] + (["aud"] if self.settings.audience else [])},
            )
        except jwt.PyJWTError as exc:
            challenge = b'Bearer realm="fissile", error="invalid_token"'
            return Refusal(401, "unauthorized", f"invalid token: {exc}", challenge)
        subject = claims.get("sub")
        name = subject if isinstance(subject, str) else ""
        claims_json = json.dumps(claims, separators=(",", ":"))
        return Principal("jwt", name, claims=claims_json, consumed=b"authorization")


Authenticator = APIKeyAuth | BasicAuth | JWTAuth


def load_jwks(path: str) -> None:
    """Raises ValueError when ``path`` is no readable JWKS (checked when a route is made)."""
    try:
        jwt.PyJWKSet.from_json(Path(path).read_text())
    except (OSError, jwt.PyJWTError, ValueError) as exc:
        raise ValueError(f"cannot use JWKS file {path}: {exc}") from None


def _header_safe(value: str) -> bytes:
    # A header value cannot hold CR/LF; what else is not latin-1 is escaped as JSON would.
    text = value if value.isprintable() else json.dumps(value)[1:-1]
    return text.encode("latin-1", "backslashreplace")
