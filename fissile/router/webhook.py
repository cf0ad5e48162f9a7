"""Webhook signatures: GitHub's ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw
body>``, checked in constant time before the function runs."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

HEADER = b"x-hub-signature-256"
PREFIX = "sha256="


def sign(secret: bytes, body: bytes) -> str:
    """The header value a sender computes (for tests and for clients of fissile)."""
    return PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def check_signature(
    secret: bytes, headers: Iterable[tuple[bytes, bytes]], body: bytes
) -> str | None:
    """None when the body is signed with ``secret``; otherwise why it is refused (without
    saying what the right signature would be)."""
    given = None
    for name, value in headers:
        if name == HEADER:
            given = value.decode("latin-1").strip()
            break
    if given is None:
        return "missing X-Hub-Signature-256 header"
    if not given.startswith(PREFIX):
        return "X-Hub-Signature-256 must be sha256=<hex digest>"
    if not hmac.compare_digest(given.encode("latin-1"), sign(secret, body).encode()):
        return "X-Hub-Signature-256 does not match the body"
    return None
