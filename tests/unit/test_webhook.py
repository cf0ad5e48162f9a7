"""Webhook signatures: GitHub's X-Hub-Signature-256 over the raw body."""

from __future__ import annotations

import hashlib
import hmac

from fissile.router.webhook import check_signature, sign

SECRET = b"it's a secret"
BODY = b'{"action": "opened"}'


def test_sign_is_githubs_scheme() -> None:
    expected = hmac.new(SECRET, BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY) == "sha256=" + expected


def test_a_valid_signature_passes() -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"x-hub-signature-256", sign(SECRET, BODY).encode()),
    ]
    assert check_signature(SECRET, headers, BODY) is None


def test_refusals_say_why_without_the_expected_value() -> None:
    good = sign(SECRET, BODY)
    cases = {
        "missing X-Hub-Signature-256": [],
        "must be sha256=": [(b"x-hub-signature-256", b"sha1=" + good[7:].encode())],
        "does not match": [(b"x-hub-signature-256", sign(b"other", BODY).encode())],
    }
    for reason, headers in cases.items():
        refusal = check_signature(SECRET, headers, BODY)
        assert refusal is not None and reason in refusal
        assert good[7:] not in refusal
    tampered = [(b"x-hub-signature-256", good.encode())]
    assert check_signature(SECRET, tampered, BODY + b" ") is not None
