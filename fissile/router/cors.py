"""CORS of one route (the Fetch standard's protocol): the router answers a browser's
preflight itself (it never reaches the function nor starts work), and adds the allow headers
to the route's real responses for an allowed ``Origin``."""

from __future__ import annotations

from fissile.models import CORSPolicy

Headers = list[tuple[bytes, bytes]]

# What a browser sends on a preflight besides Origin.
REQUEST_METHOD = b"access-control-request-method"
REQUEST_HEADERS = b"access-control-request-headers"


class Cors:
    """A route's policy, with the header values made once when the route table is built."""

    __slots__ = ("_any", "_credentials", "_origins", "_preflight", "allow_headers", "methods")

    def __init__(self, policy: CORSPolicy, route_methods: frozenset[str]) -> None:
        self._any = "*" in policy.origins
        self._origins = frozenset(o.encode() for o in policy.origins if o != "*")
        self._credentials = policy.credentials
        methods = policy.methods or sorted(route_methods) or ["GET", "HEAD", "POST"]
        self.methods = frozenset(methods)
        self.allow_headers = frozenset(policy.headers)
        preflight: Headers = [(b"access-control-allow-methods", ", ".join(methods).encode())]
        if policy.headers:
            preflight.append((b"access-control-allow-headers", ", ".join(policy.headers).encode()))
        if policy.max_age is not None:
            preflight.append((b"access-control-max-age", str(policy.max_age).encode()))
        self._preflight = preflight

    def _origin_headers(self, origin: bytes) -> Headers | None:
        if origin.lower() in self._origins:
            headers = [(b"access-control-allow-origin", origin), (b"vary", b"origin")]
        elif self._any:
            # '*' is never sent with credentials (the policy refuses that pair).
            headers = [(b"access-control-allow-origin", b"*")]
        else:
            return None
        if self._credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        return headers

    def allows(self, origin: bytes) -> bool:
        """Whether pages of ``origin`` may call the route (what a websocket's handshake is
        held to: browsers apply no CORS to websockets, so the router does)."""
        return self._origin_headers(origin) is not None

    def preflight(self, origin: bytes, method: bytes, requested: bytes) -> Headers:
        """The headers of the 204 answering a preflight: the allow headers when the origin,
        method and headers asked for are allowed, none otherwise (the browser then refuses
        the call; nothing says which part failed, as the standard has it)."""
        headers = self._origin_headers(origin)
        if headers is None or method.decode("latin-1").upper() not in self.methods:
            return [(b"vary", b"origin")]
        for name in requested.decode("latin-1").split(","):
            name = name.strip().lower()
            if name and name not in self.allow_headers and name not in _SAFELISTED:
                return [(b"vary", b"origin")]
        return headers + self._preflight

    def response(self, origin: bytes | None) -> Headers:
        """Headers added to a real response of the route."""
        if origin is None:
            return []
        return self._origin_headers(origin) or [(b"vary", b"origin")]


# Request headers a browser never asks a preflight about (CORS-safelisted), and
# content-type, which fetch() asks about only for other types than the form ones.
_SAFELISTED = frozenset({"accept", "accept-language", "content-language", "content-type"})
