"""Passwords of basic-auth users, kept as scrypt hashes (``hashlib.scrypt``): a stolen
database or spec file gives no password back without a costly search per guess.

A hash is ``scrypt$<log2 n>$<r>$<p>$<salt b64>$<key b64>``, so its cost can rise later
without breaking the hashes already stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "scrypt$"
# OWASP's minimum for scrypt: n=2**17 would cost 128 MiB per check; 2**14 with r=8 costs
# 16 MiB and ~40 ms, and the router remembers a verified password (``Verified``).
LOG2_N = 14
R = 8
P = 1
_MAXMEM = 64 * 1024 * 1024


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    key = _derive(password, salt, LOG2_N, R, P)
    return f"{PREFIX}{LOG2_N}${R}${P}${_b64(salt)}${_b64(key)}"


def is_hash(value: str) -> bool:
    try:
        _parse(value)
    except ValueError:
        return False
    return True


def verify_password(password: str, stored: str) -> bool:
    try:
        log2_n, r, p, salt, key = _parse(stored)
    except ValueError:
        return False
    return hmac.compare_digest(_derive(password, salt, log2_n, r, p), key)


def _derive(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=1 << log2_n, r=r, p=p, maxmem=_MAXMEM, dklen=32
    )


def _parse(value: str) -> tuple[int, int, int, bytes, bytes]:
    parts = value.split("$")
    if len(parts) != 6 or parts[0] != PREFIX[:-1]:
        raise ValueError("not a scrypt hash")
    log2_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
    if not (10 <= log2_n <= 20 and 1 <= r <= 16 and 1 <= p <= 4):
        raise ValueError("scrypt parameters out of range")
    return log2_n, r, p, _unb64(parts[4]), _unb64(parts[5])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
