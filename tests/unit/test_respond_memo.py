"""``RouterProtocol._respond``'s memo (fissile/router/protocol.py): a connection's repeated
response heads are written from the one built first, and whatever changes is written as it is."""

from __future__ import annotations

from typing import Any

from fissile.router.protocol import RouterProtocol


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.written.append(data)


class ServerState:
    def __init__(self) -> None:
        self.default_headers = [(b"date", b"Thu, 03 Dec 2026 12:00:00 GMT"), (b"server", b"x")]


def protocol(state: ServerState) -> Any:
    """The part of a connection ``_respond`` uses, without a server around it."""
    conn: Any = RouterProtocol.__new__(RouterProtocol)
    conn.transport = Transport()
    conn.server_state = state
    conn.closing = False
    conn.respond_memo = [None, None, None, None, None, b""]
    return conn


def test_each_response_is_written_as_without_the_memo() -> None:
    state = ServerState()
    remembering = protocol(state)
    hello = [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    plain = [(b"content-type", b"text/plain")]  # as the router's own answers: no length
    base = (200, hello, b"hello", True)
    # Each change alone, right after the response it changes: every part the head depends on.
    changes = [
        (200, list(hello), b"world", True),  # same length, other body: the same head
        (200, [(b"content-type", b"text/html"), (b"content-length", b"5")], b"hello", True),
        (201, list(hello), b"hello", True),
        (200, [(b"Connection", b"keep-alive"), *hello], b"hello", True),
        (200, list(hello), b"hello", False),
    ]
    responses = [base, base]
    for changed in changes:
        responses += [changed, base]
    responses += [(200, plain, b"hello", True), (200, list(plain), b"hello!", True)]
    for status, headers, body, keep_alive in responses:
        fresh = protocol(state)
        remembering._respond(status, headers, body, keep_alive)
        fresh._respond(status, headers, body, keep_alive)
        assert remembering.transport.written[-1] == fresh.transport.written[-1]
        assert remembering.transport.written[-1].endswith(b"\r\n\r\n" + body)
        if not keep_alive:
            assert remembering.closing and b"connection: close" in fresh.transport.written[-1]
    remembering._respond(*base)
    # uvicorn's default headers change (the date, each second): a new list, a new head.
    state.default_headers = [(b"date", b"Thu, 03 Dec 2026 12:00:01 GMT"), (b"server", b"x")]
    remembering._respond(200, list(hello), b"hello", True)
    assert b"12:00:01 GMT" in remembering.transport.written[-1]
