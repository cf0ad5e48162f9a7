"""``encode_forward``'s memo (fissile/router/app.py): a connection's repeated request heads
reuse the forwarded head built for the first, and whatever changes is forwarded as it is."""

from __future__ import annotations

import re
from typing import Any

from fissile.router.app import encode_forward
from fissile.router.proxy import Trip

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
# What differs between two encodings of one request: its ids.
IDS = re.compile(rb"(x-fissile-invocation-id: \w+|traceparent: 00-\w+-\w+-\w+)")


def encode(memo: list[Any] | None, trip: Trip, **changes: Any) -> bytes:
    request: dict[str, Any] = {
        "method": "GET",
        "target": b"/hello?x=1",
        "headers": [(b"host", b"example.test"), (b"accept", b"*/*")],
        "scheme": "http",
        "client": "10.0.0.7",
        "function": "hello",
        "params": {},
        "body": b"",
        "timeout": 60.0,
        "prefix": None,
    }
    request.update(changes)
    request["headers"] = list(request["headers"])  # a new list per request, as parsed
    return encode_forward(**request, trip=trip, memo=memo)


def without_ids(data: bytes) -> bytes:
    return IDS.sub(b"-", data)


def test_each_request_is_forwarded_as_without_the_memo() -> None:
    memo: list[Any] = [None, None, None]
    traced = [
        (b"host", b"example.test"),
        (b"traceparent", f"00-{TRACE}-00f067aa0ba902b7-01".encode()),
    ]
    # Each change alone, between requests as they were: every field the head depends on.
    changes_alone: list[dict[str, Any]] = [
        {"target": b"/hello?x=2"},
        {"headers": [(b"host", b"example.test"), (b"accept", b"text/html")]},
        {"client": "10.0.0.8"},
        {"client": None},
        {"scheme": "https"},
        {"function": "other"},
        {"timeout": 5.0},
        {"method": "POST", "body": b"{}", "params": {"id": "3"}, "prefix": "/p"},
        {"headers": traced},
        {"headers": traced},
    ]
    sequence: list[dict[str, Any]] = [{}, {}]
    for changes in changes_alone:
        sequence += [changes, {}]
    for changes in sequence:
        memo_trip, plain_trip = Trip(0.0), Trip(0.0)
        remembered = encode(memo, memo_trip, **changes)
        assert without_ids(remembered) == without_ids(encode(None, plain_trip, **changes))
        # Ids are new for each request, and the trip learns them.
        assert memo_trip.invocation != plain_trip.invocation
        assert str(memo_trip.invocation) and memo_trip.trace is not None
        if changes.get("headers") is traced:
            assert memo_trip.trace == TRACE == plain_trip.trace
            assert memo_trip.parent == "00f067aa0ba902b7"
        else:
            assert memo_trip.trace != plain_trip.trace
            assert memo_trip.parent is None
    assert memo[1] is not None  # it remembered
