"""context.invoke and context.publish: what they send over the platform socket, and their
errors."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from fissile.runtime.context import SOCKET_ENV, Context, PlatformError


class FakePlatform:
    """A one-request-per-connection HTTP server on a unix socket, recording what it got."""

    def __init__(self, path: Path, status: int = 200, body: bytes = b'{"ok": true}') -> None:
        self.path = path
        self.requests: list[bytes] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(4)
        self.reply = (
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode() + body
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += connection.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                while len(body) < length:
                    body += connection.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + body)
                connection.sendall(self.reply)


def context(**kwargs: Any) -> Context:
    import logging

    return Context("caller", "inv1", 10.0, logging.getLogger("t"), **kwargs)


@pytest.fixture
def short_tmp() -> Any:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ctx-") as directory:
        yield Path(directory)


def test_invoke_sends_the_chain_and_the_deadline(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakePlatform(short_tmp / "p.sock")
    monkeypatch.setenv(SOCKET_ENV, str(fake.path))
    reply = context(chain_id="chain9", chain_depth=2).invoke("other", {"x": 1})
    assert reply.ok and reply.json() == {"ok": True}
    head, _, body = fake.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /invoke/other HTTP/1.1"
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert headers["x-fissile-chain-id"] == "chain9"
    assert headers["x-fissile-chain-depth"] == "2"
    assert "x-fissile-caller" not in headers  # the platform names the caller, not the client
    assert 9.0 < float(headers["x-fissile-deadline"]) <= 10.0
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"x": 1}


def test_a_first_call_starts_its_own_chain() -> None:
    fresh = context()
    assert (fresh.chain_id, fresh.chain_depth) == ("inv1", 0)


def test_publish_raises_when_refused(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakePlatform(short_tmp / "p.sock", 502, b'{"error": {"message": "down"}}')
    monkeypatch.setenv(SOCKET_ENV, str(fake.path))
    with pytest.raises(PlatformError, match="502"):
        context().publish("t", "text")
    assert fake.requests[0].startswith(b"POST /publish?topic=t&mqtype=embedded HTTP/1.1")
    assert b"content-type: text/plain; charset=utf-8" in fake.requests[0].lower()


def test_no_platform_socket(monkeypatch: pytest.MonkeyPatch, short_tmp: Path) -> None:
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    with pytest.raises(PlatformError, match="not set"):
        context().invoke("f")
    monkeypatch.setenv(SOCKET_ENV, str(short_tmp / "absent.sock"))
    with pytest.raises(PlatformError, match="cannot reach the platform"):
        context().publish("t", b"x")


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def test_the_trace_comes_from_the_request_s_traceparent() -> None:
    traced = context(traceparent=f"00-{TRACE}-{SPAN}-01")
    assert (traced.trace_id, traced.span_id) == (TRACE, SPAN)
    assert traced.traceparent == f"00-{TRACE}-{SPAN}-01"


@pytest.mark.parametrize("header", ["", "00-nonsense"])
def test_without_a_valid_traceparent_an_invocation_has_a_trace_of_its_own(header: str) -> None:
    first, second = context(traceparent=header), context(traceparent=header)
    assert len(first.trace_id) == 32 and len(first.span_id) == 16
    assert first.trace_id == first.trace_id  # made once per invocation
    assert first.trace_id != second.trace_id


def test_invoke_and_publish_carry_the_trace(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakePlatform(short_tmp / "p.sock", 202)
    monkeypatch.setenv(SOCKET_ENV, str(fake.path))
    traced = context(traceparent=f"00-{TRACE}-{SPAN}-01")
    traced.invoke("other")
    traced.publish("t", "text")
    for request in fake.requests:
        assert f"traceparent: 00-{TRACE}-{SPAN}-01" in request.decode().lower()


def test_invoke_sends_the_method_path_query_and_headers(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakePlatform(short_tmp / "p.sock", 404, b'{"error": {"code": "not_here"}}')
    monkeypatch.setenv(SOCKET_ENV, str(fake.path))
    reply = context().invoke(
        "items",
        method="get",
        path="/items/a b?sort=asc",
        query={"tag": ["x", "y"], "n": 2},
        headers={"Accept": "application/json", "X-Fissile-Chain-Depth": "99"},
    )
    # A 4xx is an answer like any other, not an exception.
    assert (reply.status, reply.ok, reply.json()) == (404, False, {"error": {"code": "not_here"}})
    head, _, body = fake.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "GET /invoke/items/items/a%20b?sort=asc&tag=x&tag=y&n=2 HTTP/1.1"
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert headers["accept"] == "application/json"
    assert headers["x-fissile-chain-depth"] == "0"  # the platform's word, not the caller's
    assert "content-type" not in headers and body == b""


def test_invoke_with_json_and_a_content_type_of_the_caller(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakePlatform(short_tmp / "p.sock", 201)
    monkeypatch.setenv(SOCKET_ENV, str(fake.path))
    made = context().invoke("items", method="POST", path="items", json={"name": "pen"})
    assert made.status == 201
    typed = context().invoke(
        "items", "<a/>", query="x=1", headers={"content-type": "application/xml"}
    )
    assert typed.ok
    first, second = (request.decode() for request in fake.requests)
    assert first.startswith("POST /invoke/items/items HTTP/1.1")
    assert "content-type: application/json" in first.lower()
    assert first.endswith('{"name": "pen"}')
    assert second.startswith("POST /invoke/items?x=1 HTTP/1.1")
    assert "content-type: application/xml" in second.lower() and second.endswith("<a/>")


def test_invoke_refuses_bad_arguments_before_sending() -> None:
    with pytest.raises(TypeError, match="data or json"):
        context().invoke("f", b"x", json={})
    with pytest.raises(ValueError, match="invalid HTTP method"):
        context().invoke("f", method="GET /x")
