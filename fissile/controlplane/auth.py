"""The control API's bearer token: made on first start, kept in a 0600 file in the data dir.

Functions never see it: the data dir is not in their filesystem, and their environment is
scrubbed. The CLI finds it through ``FISSILE_TOKEN`` or the data dir (``FISSILE_DATA_DIR``).
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

TOKEN_FILE = "api-token"


def ensure_token(path: Path) -> str:
    """The token in ``path``, created (mode 0600, atomically) if missing."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.replace(tmp, path)
    return token


def authorized(header: str | None, token: str) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token.encode())
