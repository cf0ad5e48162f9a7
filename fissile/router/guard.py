"""What a route asks of a request before its function runs: a CORS policy, credentials, a
rate, a webhook signature. Compiled once per route when the route table is built; a route
without any has no guard, and its requests take the router's fast path untouched."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fissile.models import HTTPTriggerSpec, parse_rate
from fissile.revision_targets import base
from fissile.router.auth import APIKeyAuth, Authenticator, BasicAuth, JWTAuth, KeyRing
from fissile.router.cors import Cors
from fissile.router.ratelimit import Buckets, TokenBucket, local_bucket

logger = logging.getLogger("fissile.router")


@dataclass(slots=True)
class Guard:
    trigger: str
    cors: Cors | None = None
    auth: Authenticator | None = None
    bucket: TokenBucket | None = None
    webhook_secret: bytes | None = None
    #: The route asks for credentials or a signature: the function doors need one too.
    protects: bool = False
    #: Why the route cannot serve (its JWKS file is unreadable): 503 rather than open.
    broken: str | None = None


def guard_of(spec: HTTPTriggerSpec, keys: KeyRing, buckets: Buckets = local_bucket) -> Guard | None:
    """The route's guard; None when it asks for nothing."""
    if spec.cors is None and spec.auth == "none" and spec.rate is None and not spec.webhook_secret:
        return None
    guard = Guard(spec.name)
    if spec.cors is not None:
        methods = frozenset() if spec.methods == ["*"] else frozenset(spec.methods)
        guard.cors = Cors(spec.cors, methods)
    if spec.rate is not None:
        guard.bucket = buckets(f"route/{spec.name}", parse_rate(spec.rate), spec.burst)
    if spec.webhook_secret:
        guard.webhook_secret = spec.webhook_secret.encode()
    if spec.auth == "apikey":
        # A key for a function may call its revisions too.
        also = tuple(dict.fromkeys(base(target) for target in spec.function_weights))
        guard.auth = APIKeyAuth(keys, spec.function, also)
    elif spec.auth == "basic":
        guard.auth = BasicAuth(dict(spec.basic_users))
    elif spec.auth == "jwt":
        assert spec.jwt is not None
        try:
            guard.auth = JWTAuth(spec.jwt)
        except Exception as exc:  # an unreadable or invalid JWKS file
            logger.error("route %s: cannot load its JWKS file: %s", spec.name, exc)
            guard.broken = f"route {spec.name!r} cannot verify tokens: its JWKS file is unusable"
    guard.protects = spec.auth != "none" or bool(spec.webhook_secret)
    return guard
