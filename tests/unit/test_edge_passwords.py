"""Basic-auth passwords as scrypt hashes."""

from __future__ import annotations

from fissile.models import HTTPTriggerSpec
from fissile.router.passwords import hash_password, is_hash, verify_password


def test_hash_and_verify() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$14$8$1$") and "correct horse" not in stored
    assert is_hash(stored)
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)
    assert hash_password("correct horse") != stored  # salted


def test_malformed_hashes_never_verify() -> None:
    for stored in ("", "plain", "scrypt$99$8$1$AA$AA", "scrypt$14$8$1$!!$AA"):
        assert not is_hash(stored) or not verify_password("x", stored)


def test_a_route_stores_hashes_only() -> None:
    spec = HTTPTriggerSpec.model_validate(
        {"name": "r", "function": "f", "url": "/r", "auth": "basic", "basic_users": {"al": "pw"}}
    )
    assert is_hash(spec.basic_users["al"]) and verify_password("pw", spec.basic_users["al"])
    again = HTTPTriggerSpec.model_validate(spec.model_dump())
    assert again.basic_users == spec.basic_users  # a hash is kept, not hashed again
