"""The router's edge of a trace (fissile/router/app.py): the ``traceparent`` an instance is
sent, for direct calls (``encode_forward``) and asynchronous ones (``_async_headers``)."""

from __future__ import annotations

from typing import Any

from fissile.observability import tracecontext
from fissile.router.app import _async_headers, encode_forward
from fissile.router.proxy import Trip

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def sent_headers(headers: list[tuple[bytes, bytes]], trip: Trip | None = None) -> dict[str, str]:
    data = encode_forward(
        "GET", b"/x", [(b"host", b"h"), *headers], "http", "1.2.3.4", "f", {}, b"", 5.0, None, trip
    )
    head = data.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]
    found: dict[str, str] = {}
    for line in head:
        name, _, value = line.partition(": ")
        assert name not in found, f"{name} sent twice"
        found[name] = value
    return found


def test_a_valid_client_traceparent_is_continued_with_the_routers_hop() -> None:
    trip = Trip(0.0)
    headers = sent_headers(
        [(b"traceparent", f"00-{TRACE}-{PARENT}-00".encode()), (b"tracestate", b"v=1")], trip
    )
    parsed = tracecontext.parse(headers["traceparent"])
    assert parsed is not None
    trace, parent, flags = parsed
    assert (trace, flags) == (TRACE, "00") and parent != PARENT
    assert headers["tracestate"] == "v=1"
    assert trip.trace == TRACE
    assert trip.invocation is not None
    assert headers["x-fissile-invocation-id"].endswith(f"{trip.invocation:08x}")


def test_a_missing_or_invalid_traceparent_starts_a_trace() -> None:
    ids = set()
    for given in ([], [(b"traceparent", b"00-nonsense-01")]):
        trip = Trip(0.0)
        parsed = tracecontext.parse(sent_headers(given, trip)["traceparent"])
        assert parsed is not None
        trace, _, flags = parsed
        assert flags == "01"
        assert isinstance(trip.trace, bytes) and trip.trace.decode() == trace
        ids.add(trace)
    assert len(ids) == 2


def test_async_invocations_keep_the_clients_span_as_their_parent() -> None:
    # Accepting the invocation is the hop after the client's span (the invocations service
    # makes and records it); without a client trace, that service starts one.
    scope: dict[str, Any] = {
        "headers": [(b"host", b"h"), (b"traceparent", f"00-{TRACE}-{PARENT}-01".encode())],
        "path": "/async-function/f",
        "query_string": b"",
    }
    headers, _ = _async_headers(scope, "f", {})
    values = [value for name, value in headers if name == "traceparent"]
    assert values == [f"00-{TRACE}-{PARENT}-01"]
    scope["headers"] = [(b"host", b"h"), (b"traceparent", b"00-not-a-trace")]
    headers, _ = _async_headers(scope, "f", {})
    assert "traceparent" not in dict(headers)
