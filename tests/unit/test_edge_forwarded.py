"""X-Forwarded-* honoured from trusted proxies only."""

from __future__ import annotations

from typing import Any

import pytest

from fissile.router.forwarded import TrustedProxies, parse_networks, prefix_of

HEADERS = [
    (b"host", b"10.0.0.5:8080"),
    (b"x-forwarded-proto", b"https"),
    (b"x-forwarded-host", b"api.example.com"),
    (b"x-forwarded-for", b"198.51.100.1, 203.0.113.9, 10.0.0.7"),
    (b"x-forwarded-prefix", b"/fx/"),
]


def scope(client: str) -> dict[str, Any]:
    return {"scheme": "http", "client": (client, 5000), "headers": list(HEADERS), "root_path": ""}


def test_a_trusted_proxy_sets_scheme_host_client_and_prefix() -> None:
    proxies = TrustedProxies(parse_networks(["10.0.0.0/8"]))
    seen = scope("10.0.0.7")
    proxies.apply(seen)
    assert seen["scheme"] == "https"
    assert (b"host", b"api.example.com") in seen["headers"]
    # The nearest untrusted hop: what the client wrote before it is not believed.
    assert seen["client"][0] == "203.0.113.9"
    assert prefix_of(seen) == "/fx"


def test_anyone_else_changes_nothing() -> None:
    proxies = TrustedProxies(parse_networks(["10.0.0.0/8"]))
    seen = scope("192.0.2.1")
    proxies.apply(seen)
    assert seen == scope("192.0.2.1")


def test_networks_are_checked() -> None:
    assert TrustedProxies(parse_networks(["127.0.0.2", "::1"])).trusts("::1")
    assert not TrustedProxies(parse_networks(["127.0.0.2"])).trusts("unix-socket")
    with pytest.raises(ValueError, match="not an address or a CIDR"):
        parse_networks(["10.0.0.0/33"])


def test_a_clients_own_forwarded_headers_never_reach_the_function() -> None:
    from fissile.router.app import encode_forward

    request = encode_forward(
        "GET",
        b"/x",
        [(b"host", b"h"), (b"x-forwarded-proto", b"https"), (b"x-forwarded-for", b"1.2.3.4")],
        "http",
        "192.0.2.1",
        "f",
        {},
        b"",
        60.0,
    )
    lines = request.lower().split(b"\r\n")
    assert [line for line in lines if line.startswith(b"x-forwarded-")] == [
        b"x-forwarded-proto: http",
        b"x-forwarded-for: 192.0.2.1",
    ]


def test_resolve_for_the_fast_path() -> None:
    proxies = TrustedProxies(parse_networks(["10.0.0.0/8"]))
    seen = proxies.resolve("http", "10.0.0.7", list(HEADERS))
    assert seen is not None
    scheme, client, headers, prefix = seen
    assert (scheme, client, prefix) == ("https", "203.0.113.9", "/fx")
    assert headers[0] == (b"host", b"api.example.com")
    assert [name for name, _ in headers].count(b"host") == 1
    assert proxies.resolve("http", "10.0.0.7", [(b"host", b"h")]) is None
