"""Secret values at rest: Fernet tokens (AES-128-CBC and HMAC-SHA256) under a key that lives in
a file of its own, apart from the database.

A copy of ``fissile.db`` (a backup, a disk image) holds only ciphertext; reading a value takes
the key file too. The key is made on first use, 0600 in a 0700 directory, written atomically.
Digests of values are HMACs under a key derived from the same file: they tell whether a value
changed without being a way to guess it offline.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

KEY_DIR = "keys"
KEY_FILE = "secrets.key"


class SealError(Exception):
    """A sealed value cannot be opened: the key file is not the one it was sealed with, or the
    record was altered."""


def key_path(data_dir: Path) -> Path:
    """Where a data dir keeps its secrets key."""
    return data_dir / KEY_DIR / KEY_FILE


def ensure_key(path: Path) -> bytes:
    """The key in ``path``, created (0600, atomically) when there is none yet."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    from cryptography.fernet import Fernet

    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    key = Fernet.generate_key()
    partial = path.with_name(path.name + ".part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    try:
        # link, not replace: a second process making the key at the same moment keeps its own
        # only if it got there first, so both end up with one key.
        os.link(partial, path)
    except FileExistsError:
        pass
    finally:
        partial.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes().strip()
    try:
        if len(base64.urlsafe_b64decode(key)) != 32:
            raise ValueError
    except ValueError:
        raise SealError(f"{path} does not hold a secrets key (32 bytes, url-safe base64)") from None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SealError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    return key


class Sealer:
    """Seals and opens the values of secrets with the key of one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fernet: Fernet | None = None
        self._digest_key = b""

    def _ready(self, create: bool = True) -> Fernet:
        # The key file is made on first use: a platform that never holds a secret has none.
        # (cryptography is imported here, not above: zygotes import the executor, and with it
        # this module, and must stay small.)
        if self._fernet is None:
            from cryptography.fernet import Fernet

            if not create and not self.path.exists():
                # A new key would open nothing sealed with the lost one.
                raise SealError(
                    f"there is no secrets key at {self.path}: the secrets stored with it cannot"
                    " be opened (restore the key file, or create the secrets again)"
                )
            key = ensure_key(self.path)
            self._fernet = Fernet(key)
            self._digest_key = hashlib.sha256(b"fissile value digest\0" + key).digest()
        return self._fernet

    def seal(self, values: dict[str, str]) -> str:
        return self._ready().encrypt(_canonical(values)).decode()

    def open(self, token: str) -> dict[str, str]:
        from cryptography.fernet import InvalidToken

        try:
            plain = self._ready(create=False).decrypt(token.encode())
        except InvalidToken:
            raise SealError(
                f"a secret cannot be decrypted with the key in {self.path}: the key file was"
                " replaced, or the record altered"
            ) from None
        values: dict[str, str] = json.loads(plain)
        return values

    def digest(self, values: dict[str, str]) -> str:
        self._ready()
        return hmac.new(self._digest_key, _canonical(values), "sha256").hexdigest()


def _canonical(values: dict[str, str]) -> bytes:
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
