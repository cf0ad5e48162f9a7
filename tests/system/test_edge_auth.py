"""Edge security per route, as a user sets it up with the CLI: API keys, basic users and JWTs
(good, missing and wrong credentials), the /function/ doors locked for protected functions,
CORS preflights answered by the router alone, routes bound to hosts, a trusted proxy's links,
rate limits, and TLS with a certificate made here."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from syskit import Platform, error_of, run_cli, wait_for, write
from trigkit import log_lines

WHO = """
def main(request):
    print("CALLED", request.method, request.path, flush=True)
    h = request.headers
    return {
        "function": h.get("x-fissile-function"),
        "principal": h.get("x-fissile-principal"),
        "auth": h.get("x-fissile-auth"),
        "claims": h.get("x-fissile-claims"),
        "authorization": h.get("authorization"),
        "api_key": h.get("x-api-key"),
        "method": request.method,
        "proto": h.get("x-forwarded-proto"),
        "url": h.get("x-fissile-full-url"),
    }
"""

JWT_SECRET = "a-shared-secret-of-32-characters!"
WEBHOOK_SECRET = "edge-webhook-secret"


def calls(platform: Platform, function: str) -> int:
    return len(log_lines(platform.data_dir, function, "CALLED "))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform of its own: 127.0.0.2 is its trusted proxy."""
    root = tmp_path_factory.mktemp("edge")
    running = Platform(root / "data", ("--trusted-proxy", "127.0.0.2/32")).start()
    try:
        source = write(root / "who.py", WHO)
        running.ok_many(
            *(("fn", "create", "--name", name, "--code", str(source)) for name in _FUNCTIONS)
        )
        # An RSA key for the JWKS routes: its public half in the file, by kid.
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
        (root / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1"}]}))
        running.rsa_key = private  # type: ignore[attr-defined]
        users = write(root / "users.txt", "bob:hunter22\n")
        running.ok_many(
            ("route", "create", "--name", "r-open", "--function", "edge-open", "--url", "/open"),
            ("route", "create", "--name", "r-key", "--function", "edge-who", "--url", "/key",
             "--auth", "apikey"),
            ("route", "create", "--name", "r-basic", "--function", "edge-who", "--url", "/basic",
             "--auth", "basic", "--basic-user", "alice:s3cret-pw", "--basic-users-file",
             str(users)),
            ("route", "create", "--name", "r-jwt", "--function", "edge-who", "--url", "/jwt",
             "--auth", "jwt", "--jwt-secret", JWT_SECRET, "--jwt-audience", "students",
             "--jwt-issuer", "https://issuer.example"),
            ("route", "create", "--name", "r-jwks", "--function", "edge-who", "--url", "/jwks",
             "--auth", "jwt", "--jwt-jwks-file", str(root / "jwks.json")),
            ("route", "create", "--name", "r-hook", "--function", "edge-hook", "--url", "/hook",
             "--method", "POST", "--webhook-secret", WEBHOOK_SECRET),
            ("route", "create", "--name", "r-cors", "--function", "edge-open", "--url", "/cors",
             "--method", "POST", "--cors-origin", "https://app.example",
             "--cors-methods", "POST", "--cors-headers", "content-type,x-token",
             "--cors-max-age", "600", "--cors-credentials"),
            ("route", "create", "--name", "r-site-a", "--function", "edge-open", "--url", "/site",
             "--host", "a.example.com"),
            ("route", "create", "--name", "r-site", "--function", "edge-other", "--url", "/site"),
            ("route", "create", "--name", "r-only-b", "--function", "edge-other", "--url",
             "/only-b", "--host", "b.example.com"),
            ("route", "create", "--name", "r-limited", "--function", "edge-open", "--url",
             "/limited", "--rate", "1/m", "--burst", "2"),
        )  # fmt: skip
        yield running
        running.stop_cleanly()
        assert "Traceback" not in running.stderr(), running.stderr()[-5000:]
    finally:
        running.abandon()


_FUNCTIONS = ("edge-who", "edge-open", "edge-hook", "edge-other")


def new_key(platform: Platform, name: str, *args: str) -> str:
    result = platform.ok("apikey", "create", "--name", name, *args)
    return result.out.strip()


# -- API keys -------------------------------------------------------------------------------


def test_apikey_route_good_missing_wrong_and_other_function(edge: Platform) -> None:
    value = new_key(edge, "k-who", "--function", "edge-who")
    other = new_key(edge, "k-other", "--function", "edge-open")
    good = edge.get("/key", headers={"X-API-Key": value, "X-Fissile-Principal": "root"})
    assert good.status_code == 200, good.text
    seen = good.json()
    # The principal is the router's, not the client's; the key itself is not passed on.
    assert seen["principal"] == "k-who" and seen["auth"] == "apikey"
    assert seen["api_key"] is None
    assert edge.get("/key", headers={"Authorization": f"Bearer {value}"}).status_code == 200

    before = calls(edge, "edge-who")
    missing = edge.get("/key")
    assert missing.status_code == 401 and "www-authenticate" in missing.headers
    assert error_of(missing)["code"] == "unauthorized"
    wrong = edge.get("/key", headers={"X-API-Key": value[:-2] + "xx"})
    assert wrong.status_code == 401 and "unknown API key" in error_of(wrong)["message"]
    forbidden = edge.get("/key", headers={"X-API-Key": other})
    assert forbidden.status_code == 403, forbidden.text
    assert calls(edge, "edge-who") == before

    # The value is shown once: never by a read, a list or a spec.
    listed = edge.json_of("apikey", "list")
    assert value not in json.dumps(listed) and "hash" not in json.dumps(listed)
    assert value not in edge.ok("apikey", "get", "--name", "k-who", "-o", "json").out
    edge.ok("apikey", "delete", "--name", "k-who")
    assert wait_for(
        lambda: edge.get("/key", headers={"X-API-Key": value}).status_code == 401,
        10,
        "a deleted key refused",
    )


def test_apikey_spec_holds_no_value(edge: Platform, tmp_path: Path) -> None:
    edge.ok("apikey", "create", "--name", "k-spec", "--function", "edge-who", "--spec",
            "--specdir", str(tmp_path))  # fmt: skip
    text = "".join(p.read_text() for p in tmp_path.rglob("*.yaml"))
    assert "kind: APIKey" in text and "fsk_" not in text


# -- basic ----------------------------------------------------------------------------------


def test_basic_route_good_missing_wrong(edge: Platform) -> None:
    good = edge.get("/basic", headers={"Authorization": basic("alice", "s3cret-pw")})
    assert good.status_code == 200, good.text
    assert good.json()["principal"] == "alice" and good.json()["authorization"] is None
    from_file = edge.get("/basic", headers={"Authorization": basic("bob", "hunter22")})
    assert from_file.status_code == 200 and from_file.json()["principal"] == "bob"
    before = calls(edge, "edge-who")
    missing = edge.get("/basic")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Basic ")
    for header in (basic("alice", "wrong"), basic("mallory", "s3cret-pw"), "Basic !!!"):
        wrong = edge.get("/basic", headers={"Authorization": header})
        assert wrong.status_code == 401, (header, wrong.text)
    assert calls(edge, "edge-who") == before
    # Neither the passwords nor their hashes are shown.
    shown = edge.ok("route", "get", "--name", "r-basic", "-o", "json").out
    assert "s3cret-pw" not in shown and "scrypt$" not in shown
    assert json.loads(shown)["basic_users"] == {"alice": "********", "bob": "********"}


# -- JWT ------------------------------------------------------------------------------------


def _token(key: Any, algorithm: str = "HS256", **claims: Any) -> str:
    body = {
        "sub": "student-7",
        "aud": "students",
        "iss": "https://issuer.example",
        "exp": int(time.time()) + 300,
        **claims,
    }
    body = {k: v for k, v in body.items() if v is not None}
    headers = {"kid": "k1"} if algorithm != "HS256" else None
    return jwt.encode(body, key, algorithm=algorithm, headers=headers)


def test_jwt_route_with_a_shared_secret(edge: Platform) -> None:
    good = edge.get("/jwt", headers={"Authorization": f"Bearer {_token(JWT_SECRET)}"})
    assert good.status_code == 200, good.text
    assert good.json()["principal"] == "student-7" and good.json()["auth"] == "jwt"
    assert json.loads(good.json()["claims"])["aud"] == "students"
    before = calls(edge, "edge-who")
    assert edge.get("/jwt").status_code == 401
    for token in (
        _token("another-secret-of-32-characters!!"),
        _token(JWT_SECRET, aud="teachers"),
        _token(JWT_SECRET, iss="https://elsewhere.example"),
        _token(JWT_SECRET, exp=int(time.time()) - 60),
        "not.a.jwt",
    ):
        wrong = edge.get("/jwt", headers={"Authorization": f"Bearer {token}"})
        assert wrong.status_code == 401, wrong.text
        assert "invalid token" in error_of(wrong)["message"]
    assert calls(edge, "edge-who") == before
    assert JWT_SECRET not in edge.ok("route", "get", "--name", "r-jwt", "-o", "json").out


def test_jwt_route_with_a_jwks_file(edge: Platform) -> None:
    key = edge.rsa_key  # type: ignore[attr-defined]
    token = _token(key, "RS256", aud=None, iss=None)
    good = edge.get("/jwks", headers={"Authorization": f"Bearer {token}"})
    assert good.status_code == 200, good.text
    assert good.json()["principal"] == "student-7"
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong = edge.get("/jwks", headers={"Authorization": f"Bearer {_token(stranger, 'RS256')}"})
    assert wrong.status_code == 401
    # HS256 signed with the public key (algorithm confusion) is refused.
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = _hs256_with(public, {"sub": "admin", "exp": int(time.time()) + 300})
    assert edge.get("/jwks", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert edge.get("/jwks").status_code == 401


def _hs256_with(secret: bytes, claims: dict[str, Any]) -> str:
    """A token signed HS256 with ``secret`` (PyJWT will not sign with a public key)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    head = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = part(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{part(mac)}"


# -- the function doors ---------------------------------------------------------------------


def test_function_doors_are_locked_for_protected_functions(edge: Platform) -> None:
    before_who = calls(edge, "edge-who")
    before_hook = calls(edge, "edge-hook")
    for path in ("/function/edge-who", "/async-function/edge-who", "/function/edge-hook"):
        refused = edge.request("POST", path, content=b"{}")
        assert refused.status_code == 401, (path, refused.text)
        assert "credentials" in error_of(refused)["message"]
    assert calls(edge, "edge-who") == before_who and calls(edge, "edge-hook") == before_hook
    assert edge.json_of("inv", "list", "--function", "edge-who") == []
    # An API key for the function, or the platform token, opens the door.
    value = new_key(edge, "k-door", "--function", "edge-who")
    keyed = edge.get("/function/edge-who", headers={"X-API-Key": value})
    assert keyed.status_code == 200 and keyed.json()["principal"] == "k-door"
    token = (edge.data_dir / "api-token").read_text().strip()
    operator = edge.get("/function/edge-who", headers={"X-Fissile-Token": token})
    assert operator.status_code == 200 and operator.json()["auth"] == "token"
    assert token not in operator.text  # an X-Fissile-* header never reaches the function
    assert edge.ok("fn", "test", "--name", "edge-who").rc == 0  # the CLI holds the token
    # A function without a protected route keeps an open door.
    assert edge.get("/function/edge-open").status_code == 200


# -- CORS and OPTIONS -----------------------------------------------------------------------


def test_cors_preflight_is_answered_by_the_router(edge: Platform) -> None:
    before = calls(edge, "edge-open")
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Content-Type, X-Token",
    }
    answered = edge.request("OPTIONS", "/cors", headers=preflight)
    assert answered.status_code == 204, answered.text
    assert answered.headers["access-control-allow-origin"] == "https://app.example"
    assert answered.headers["access-control-allow-methods"] == "POST"
    assert answered.headers["access-control-allow-headers"] == "content-type, x-token"
    assert answered.headers["access-control-max-age"] == "600"
    assert answered.headers["access-control-allow-credentials"] == "true"
    stranger = edge.request(
        "OPTIONS", "/cors", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert stranger.status_code == 204
    assert "access-control-allow-origin" not in stranger.headers
    asked_more = edge.request(
        "OPTIONS", "/cors", headers={**preflight, "Access-Control-Request-Headers": "x-other"}
    )
    assert "access-control-allow-origin" not in asked_more.headers
    assert calls(edge, "edge-open") == before  # the function never saw a preflight

    real = edge.request("POST", "/cors", headers={"Origin": "https://app.example"})
    assert real.status_code == 200, real.text
    assert real.headers["access-control-allow-origin"] == "https://app.example"


def test_options_without_cors_is_204_with_allow_and_starts_nothing(edge: Platform) -> None:
    before = calls(edge, "edge-open")
    plain = edge.request("OPTIONS", "/open")
    assert plain.status_code == 204 and plain.headers["allow"] == "GET, HEAD, OPTIONS"
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    for path in ("/async-function/edge-open", "/function/edge-open"):
        answered = edge.request("OPTIONS", path, headers={**preflight, "Prefer": "respond-async"})
        assert answered.status_code == 204, (path, answered.text)
        assert "POST" in answered.headers["allow"]
        assert "access-control-allow-origin" not in answered.headers
    assert calls(edge, "edge-open") == before
    assert edge.json_of("inv", "list", "--function", "edge-open") == []


# -- hosts ----------------------------------------------------------------------------------


def test_routes_bound_to_hosts(edge: Platform) -> None:
    def served_by(host: str, path: str = "/site") -> Any:
        response = edge.get(path, headers={"Host": host})
        return (
            response.json().get("function") if response.status_code == 200 else response.status_code
        )

    assert served_by("a.example.com") == "edge-open"
    assert served_by("A.Example.COM:8080") == "edge-open"
    assert served_by("b.example.com") == "edge-other"
    assert served_by("127.0.0.1") == "edge-other"
    assert served_by("b.example.com", "/only-b") == "edge-other"
    assert served_by("a.example.com", "/only-b") == 404
    shown = edge.json_of("route", "get", "--name", "r-site-a")
    assert shown["host"] == "a.example.com"


# -- a trusted proxy ------------------------------------------------------------------------


def _from(address: str, platform: Platform) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=platform.router_url, transport=transport, timeout=30)


def test_a_trusted_proxy_sets_links_and_client(edge: Platform) -> None:
    forwarded = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "api.example.com",
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Prefix": "/fx",
    }
    with _from("127.0.0.2", edge) as proxy:
        accepted = proxy.post("/async-function/edge-open", headers=forwarded)
        assert accepted.status_code == 202, accepted.text
        document = accepted.json()
        assert document["status_url"] == f"https://api.example.com/fx/invocations/{document['id']}"
        assert document["ws_url"].startswith("wss://api.example.com/fx/invocations/")
        assert accepted.headers["location"] == f"/fx/invocations/{document['id']}"
        # A plain call takes the router's fast path, with the client's scheme and host.
        served = proxy.get("/open", headers=forwarded)
        assert served.status_code == 200, served.text
        assert served.json()["proto"] == "https"
        assert served.json()["url"] == "https://api.example.com/open"
        # Routes bound to a host match the forwarded one.
        hosted = proxy.get("/site", headers={"X-Forwarded-Host": "a.example.com"})
        assert hosted.json()["function"] == "edge-open"
    # The same headers from anyone else are the client's own words: ignored.
    with _from("127.0.0.1", edge) as stranger:
        accepted = stranger.post("/async-function/edge-open", headers=forwarded)
        assert accepted.json()["status_url"].startswith(f"http://127.0.0.1:{edge.port}/")
        served = stranger.get("/open", headers=forwarded)
        assert served.json()["proto"] == "http"  # the client's own copy never arrives
        assert served.json()["url"] == f"http://127.0.0.1:{edge.port}/open"

    def proxied() -> list[dict[str, Any]]:
        lines = (edge.data_dir / "logs" / "access.log").read_text().splitlines()
        return [
            entry
            for entry in map(json.loads, lines)
            if entry["path"] == "/open" and entry["method"] == "GET"
        ]

    # The access log names the client the proxy spoke for, not the proxy; the stranger's
    # request, its own address.
    wait_for(lambda: len(proxied()) == 2, 10, "the access log's lines")
    assert {entry["client"] for entry in proxied()} == {"203.0.113.9", "127.0.0.1"}


# -- rate limits ----------------------------------------------------------------------------


def test_rate_limits_per_route_and_per_key(edge: Platform) -> None:
    statuses = [edge.get("/limited").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = edge.get("/limited")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert error_of(limited)["code"] == "rate_limited"
    value = new_key(edge, "k-slow", "--function", "edge-who", "--rate", "1/m")
    assert edge.get("/key", headers={"X-API-Key": value}).status_code == 200
    slow = edge.get("/key", headers={"X-API-Key": value})
    assert slow.status_code == 429 and "k-slow" in error_of(slow)["message"]


# -- TLS ------------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fissile test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class TLSPlatform(Platform):
    @property
    def router_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"


def test_tls_with_a_self_signed_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what the CLI trusts
    platform = TLSPlatform(
        tmp_path / "data",
        ("--tls-cert", str(cert), "--tls-key", str(key), "--function-door", "off"),
    )
    platform.http = httpx.Client(timeout=30.0, verify=ssl.create_default_context(cafile=str(cert)))
    try:
        platform.start()
        source = write(tmp_path / "who.py", WHO)
        platform.ok("fn", "create", "--name", "tls-who", "--code", str(source))
        platform.ok("route", "create", "--function", "tls-who", "--url", "/who")
        served = platform.get("/who")
        assert served.status_code == 200, served.text
        assert served.json()["function"] == "tls-who"
        assert served.json()["proto"] == "https"  # on the router's fast path
        assert served.json()["url"] == f"{platform.router_url}/who"
        # The door is off for everyone but the platform token (fn test holds it).
        closed = platform.get("/function/tls-who")
        assert closed.status_code == 404 and error_of(closed)["code"] == "door_closed"
        assert '"tls-who"' in platform.ok("fn", "test", "--name", "tls-who").out
        # Plain HTTP is not served on the TLS port; an unknown certificate is refused.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{platform.port}/who", timeout=10).raise_for_status()
        with pytest.raises(httpx.ConnectError):
            public_roots = ssl.create_default_context(cafile=certifi.where())
            httpx.get(f"{platform.router_url}/who", timeout=10, verify=public_roots)
        assert run_cli(platform.api_url, "fn", "list", data_dir=platform.data_dir).rc == 0
        # The test's client keeps its TLS connections open: the stop does not wait for them.
        started = time.monotonic()
        platform.stop_cleanly()
        assert time.monotonic() - started < 15
    finally:
        platform.abandon()


def test_updating_a_route_keeps_its_secrets(edge: Platform) -> None:
    users = ("--basic-user", "carol:first-pw", "--basic-user", "dan:dans-pw")
    edge.ok("route", "create", "--name", "r-upd", "--function", "edge-who", "--url", "/upd",
            "--auth", "basic", *users)  # fmt: skip
    edge.ok("route", "update", "--name", "r-upd", "--rate", "100/s", "--no-basic-user", "dan")
    wait_for(
        lambda: (
            edge.get("/upd", headers={"Authorization": basic("dan", "dans-pw")}).status_code == 401
        ),
        10,
        "dan removed",
    )
    kept = edge.get("/upd", headers={"Authorization": basic("carol", "first-pw")})
    assert kept.status_code == 200 and kept.json()["principal"] == "carol"
    assert edge.json_of("route", "get", "--name", "r-upd")["rate"] == "100/s"

    edge.ok("route", "update", "--name", "r-jwt", "--jwt-issuer", "https://issuer.example")
    still = edge.get("/jwt", headers={"Authorization": f"Bearer {_token(JWT_SECRET)}"})
    assert still.status_code == 200, still.text


# -- websockets on a guarded route ----------------------------------------------------------

WS_APP = """
from fastapi import FastAPI, WebSocket

app = FastAPI()


@app.websocket("/who")
async def who(websocket: WebSocket):
    await websocket.accept()
    headers = dict(websocket.headers)
    await websocket.send_text(f"{headers.get('x-fissile-principal')} {headers.get('x-api-key')}")
    await websocket.close()
"""


def test_a_websocket_to_a_guarded_route_is_checked_first(edge: Platform, tmp_path: Path) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    app = write(tmp_path / "ws_app.py", WS_APP)
    edge.ok("fn", "create", "--name", "edge-ws", "--code", str(app), "--entrypoint",
            "ws_app:app", "--contract", "asgi")  # fmt: skip
    edge.ok("route", "create", "--name", "r-ws", "--function", "edge-ws", "--prefix", "/ws",
            "--auth", "apikey", "--cors-origin", "https://app.example")  # fmt: skip
    value = new_key(edge, "k-ws", "--function", "edge-ws")
    url = edge.router_url.replace("http://", "ws://", 1) + "/ws/who"
    options: dict[str, Any] = {"open_timeout": 60, "ping_interval": None}
    with connect(url, additional_headers={"X-API-Key": value}, **options) as connection:
        assert connection.recv(timeout=60) == "k-ws None"  # who, and not the key itself
    for headers, status in (
        ({}, 401),
        ({"X-API-Key": "fsk_wrong"}, 401),
        ({"X-API-Key": value, "Origin": "https://evil.example"}, 403),
    ):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers=headers, **options)
        assert refused.value.response.status_code == status, headers
