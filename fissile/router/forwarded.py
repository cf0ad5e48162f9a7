"""``fissile up --trusted-proxy CIDR``: behind a reverse proxy, the client's scheme, host,
address and path prefix come in ``X-Forwarded-Proto``, ``-Host``, ``-For`` and ``-Prefix``.
They are honoured only on connections from the proxies named; from anyone else they are
what the client made up, and the connection's own values stand."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_FORWARDED = (
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-forwarded-for",
    b"x-forwarded-prefix",
)


def parse_networks(values: Iterable[str]) -> list[Network]:
    """Networks from CIDRs or single addresses; ValueError names a bad one."""
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an address or a CIDR such as 10.0.0.0/8") from None
    return networks


class TrustedProxies:
    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)

    def trusts(self, address: str | None) -> bool:
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False  # a unix socket's peer
        return any(ip in network for network in self.networks)

    def apply(self, scope: dict[str, Any]) -> None:
        """Rewrite an ASGI scope from a trusted proxy's headers, as uvicorn's proxy middleware
        does, plus the host and the prefix (``root_path``)."""
        client = scope.get("client")
        if not client or not self.trusts(client[0]):
            return
        found: dict[bytes, str] = {}
        for name, value in scope["headers"]:
            if name in _FORWARDED and name not in found:
                found[name] = value.decode("latin-1")
        if not found:
            return
        proto = found.get(b"x-forwarded-proto")
        if proto:
            scheme = proto.split(",")[0].strip().lower()
            if scheme in ("http", "https"):
                scope["scheme"] = scheme
        forwarded_for = found.get(b"x-forwarded-for")
        if forwarded_for:
            # The nearest address that is not one of the proxies: each proxy appends the
            # address it heard from, so those to the left are whatever the client wrote.
            hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
            client_address = hops[0] if hops else client[0]
            for hop in reversed(hops):
                client_address = hop
                if not self.trusts(hop):
                    break
            scope["client"] = (client_address, 0)
        host = found.get(b"x-forwarded-host")
        if host:
            host = host.split(",")[0].strip()
            scope["headers"] = [
                (name, host.encode("latin-1") if name == b"host" else value)
                for name, value in scope["headers"]
            ]
        prefix = found.get(b"x-forwarded-prefix")
        if prefix:
            prefix = prefix.split(",")[0].strip().rstrip("/")
            if prefix.startswith("/") and "//" not in prefix:
                scope["root_path"] = prefix


def prefix_of(scope: dict[str, Any]) -> str:
    """The path prefix a trusted proxy serves this under ("" when none)."""
    prefix = scope.get("root_path", "")
    return prefix if isinstance(prefix, str) else ""
