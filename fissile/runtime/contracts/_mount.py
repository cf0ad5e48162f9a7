"""Where a whole app is mounted: the part of the path that belongs to the platform.

An app served as a function sees the full path the client asked for; its own routes are
relative to the route prefix it is mounted under (``x-fissile-route-prefix``, set by the
router on prefix routes) or to ``/function/<name>`` for direct calls. That part becomes the
app's ``root_path`` (ASGI) or ``SCRIPT_NAME`` (WSGI), so its routing works unchanged and the URLs
it generates include the prefix.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from fissile.runtime.request import Request

ROUTE_PREFIX_HEADER = "x-fissile-route-prefix"
DIRECT_PREFIX = "/function/"


def split_path(request: Request, function: str) -> tuple[str, str]:
    """``(root_path, path)``: the mount point and the full path, both percent-decoded and as
    latin-1 text (WSGI's bytes-in-a-str; ASGI re-decodes as UTF-8). ``path`` still begins with
    ``root_path``; a mount point the path does not begin with (a prefix spelled with
    percent-escapes) is dropped rather than reported wrongly."""
    path = unquote_to_bytes(request.path).decode("latin-1")
    header = request.headers.get(ROUTE_PREFIX_HEADER)
    if header is not None:
        root = unquote_to_bytes(header).decode("latin-1")
    else:
        direct = DIRECT_PREFIX + function
        root = direct if path == direct or path.startswith(direct + "/") else ""
    root = root.rstrip("/")
    if root and not (path == root or path.startswith(root + "/")):
        root = ""
    return root, path
