"""What the other platforms' contracts need to know about a call: whether a client sent it over
HTTP or the platform made it (a trigger, an asynchronous invocation, another function), and the
path that platform's own URL would have shown the function."""

from __future__ import annotations

from fissile.runtime.request import Request

TRIGGER = "x-fissile-trigger"
ASYNC = "x-fissile-async"
# Set on every context.invoke (x-fissile-caller only when the platform knows the caller).
CHAIN_DEPTH = "x-fissile-chain-depth"


def origin(request: Request) -> str | None:
    """``mqt``, ``timer`` or ``watch`` for a trigger, ``async`` for an asynchronous
    invocation, ``invoke`` for ``context.invoke``; ``None`` for a client's HTTP request. The
    router drops these headers from what clients send, so they cannot be forged."""
    headers = request.headers
    trigger = headers.get(TRIGGER)
    if trigger:
        return trigger
    if ASYNC in headers:
        return "async"
    if CHAIN_DEPTH in headers:
        return "invoke"
    return None


def split_path(request: Request, function: str) -> tuple[str, str]:
    """``(prefix, path)``: a direct call at ``/function/<name>/rest`` is ``/rest`` under that
    prefix, as the platforms' per-function URLs show it; a route's path is the path as is."""
    path = request.path
    prefix = f"/function/{function}"
    if path == prefix or path.startswith(prefix + "/"):
        return prefix, path[len(prefix) :] or "/"
    return "", path
