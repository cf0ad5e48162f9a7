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
        seen = self.resolve(scope.get("scheme", "http"), client[0], scope["headers"])
        if seen is None:
            return
        scope["scheme"], address, scope["headers"], prefix = seen
        if address != client[0]:
            scope["client"] = (address, 0)
        if prefix:
            scope["root_path"] = prefix

    def resolve(
        self, scheme: str, client: str, headers: list[tuple[bytes, bytes]]
    ) -> tuple[str, str, list[tuple[bytes, bytes]], str] | None:
        """The scheme, client address, headers (``host`` replaced by the forwarded host) and
        path prefix a trusted proxy's request stands for; None when it forwarded nothing.
        The caller has checked that the peer is trusted."""
        found: dict[bytes, str] = {}
        for name, value in headers:
            if name in _FORWARDED and name not in found:
                found[name] = value.decode("latin-1")
        if not found:
            return None
        proto = found.get(b"x-forwarded-proto")
        if proto:
            forwarded_scheme = proto.split(",")[0].strip().lower()
            if forwarded_scheme in ("http", "https"):
                scheme = forwarded_scheme
        forwarded_for = found.get(b"x-forwarded-for")
        if forwarded_for:
            # The nearest address that is not one of the proxies: each proxy appends the
            # address it heard from, so those to the left are whatever the client wrote.
            for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
                client = hop
                if not self.trusts(hop):
                    break
        host = found.get(b"x-forwarded-host")
        if host:
            value = host.split(",")[0].strip().encode("latin-1")
            headers = [(b"host", value), *((n, v) for n, v in headers if n != b"host")]
        prefix = (found.get(b"x-forwarded-prefix") or "").split(",")[0].strip().rstrip("/")
        if not prefix.startswith("/") or "//" in prefix:
            prefix = ""
        return scheme, client, headers, prefix


def prefix_of(scope: dict[str, Any]) -> str:
    """The path prefix a trusted proxy serves this under ("" when none)."""
    prefix = scope.get("root_path", "")
    return prefix if isinstance(prefix, str) else ""
