"""The control API's bearer token: made on first start, kept in a 0600 file in the data dir.

Functions never see it: the data dir is not in their filesystem, and their environment is
scrubbed. The CLI finds it through ``FISSILE_TOKEN`` or the data dir (``FISSILE_DATA_DIR``); the
dashboard (``/ui``) asks for it once and keeps a session cookie derived from it.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
from collections.abc import Mapping
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


# -- the dashboard's session ---------------------------------------------------------------

SESSION_COOKIE = "fissile_session"
# Requests a dashboard page may make with its cookie besides GETs: calling a function.
_COOKIE_POSTS = re.compile(r"/v1/functions/[^/]+/invoke")
CSRF_HEADER = "x-fissile-csrf"


def session_of(token: str) -> str:
    """The dashboard's cookie for ``token``: derived from it, so the token itself is never in
    a cookie, and a new token ends every session."""
    return hmac.new(token.encode(), b"fissile dashboard session", "sha256").hexdigest()


def session_valid(cookie: str | None, token: str) -> bool:
    return bool(cookie) and hmac.compare_digest(str(cookie).encode(), session_of(token).encode())


def same_origin(headers: Mapping[str, str], scheme: str) -> bool:
    """The request's ``Origin`` is this server: a page of the dashboard, not another site."""
    origin, host = headers.get("origin"), headers.get("host")
    return origin is not None and host is not None and origin == f"{scheme}://{host}"


def cookie_allows(
    method: str, path: str, headers: Mapping[str, str], cookie: str | None, scheme: str, token: str
) -> bool:
    """Whether the dashboard's cookie authorizes this API request: reads, and the invoke POST
    from a page of the dashboard. The cookie is SameSite=Strict, and a POST must also come
    from this origin with the header a page's script adds (which a form of another site
    cannot send, and which another site's script may not send here without a CORS preflight
    this API never grants)."""
    if not session_valid(cookie, token):
        return False
    if method in ("GET", "HEAD"):
        return True
    return (
        method == "POST"
        and _COOKIE_POSTS.fullmatch(path) is not None
        and headers.get(CSRF_HEADER) == "1"
        and same_origin(headers, scheme)
    )
