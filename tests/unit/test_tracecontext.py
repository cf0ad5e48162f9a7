"""traceparent: what W3C Trace Context accepts and refuses, and the ids made here."""

from __future__ import annotations

import pytest

from fissile.observability import tracecontext
from fissile.observability.tracecontext import TraceParent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


def test_a_valid_header_is_read() -> None:
    parsed = tracecontext.parse(VALID)
    assert parsed == TraceParent(TRACE, SPAN, "01")
    assert parsed is not None and parsed.sampled
    assert tracecontext.parse(f" {VALID}\t") == parsed  # optional whitespace around it
    unsampled = tracecontext.parse(f"00-{TRACE}-{SPAN}-00")
    assert unsampled is not None and not unsampled.sampled


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"00-{TRACE}-{SPAN}",  # no flags
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE}-{SPAN}-011",
        f"00-{TRACE.upper()}-{SPAN}-01",  # upper-case hex is refused
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"0-{TRACE}-{SPAN}-01",
        f"00-{TRACE[:-1]}-{SPAN}-01",
        f"00_{TRACE}_{SPAN}_01",
        f"cc-{TRACE}-{SPAN}-01x",  # a later version's extra fields start with a dash
    ],
)
def test_invalid_headers_are_none(header: str) -> None:
    assert tracecontext.parse(header) is None


def test_a_later_version_is_read_as_version_00() -> None:
    assert tracecontext.parse(f"cc-{TRACE}-{SPAN}-01") == TraceParent(TRACE, SPAN, "01")
    assert tracecontext.parse(f"cc-{TRACE}-{SPAN}-01-what-comes-later") == TraceParent(
        TRACE, SPAN, "01"
    )


def test_new_ids_are_hex_of_the_right_length_and_differ() -> None:
    traces = {tracecontext.new_trace_id() for _ in range(100)}
    spans = {tracecontext.new_span_id() for _ in range(100)}
    assert len(traces) == len(spans) == 100
    assert all(len(t) == 32 and int(t, 16) for t in traces)
    assert all(len(s) == 16 and int(s, 16) for s in spans)


def test_format_round_trips() -> None:
    header = tracecontext.format(TRACE, SPAN, "01")
    assert header == VALID
    assert tracecontext.format(TRACE, SPAN, 1) == VALID  # flags as a number too
    assert tracecontext.format(TRACE, SPAN) == VALID  # sampled by default
    trace, span = tracecontext.new_trace_id(), tracecontext.new_span_id()
    assert tracecontext.parse(tracecontext.format(trace, span, "00")) == (trace, span, "00")


def test_bytes_and_whitespace_are_read() -> None:
    assert tracecontext.parse(VALID) == (TRACE, SPAN, "01")
    assert tracecontext.parse(VALID.encode()) == (TRACE, SPAN, "01")
    assert tracecontext.parse(f" {VALID} ") == (TRACE, SPAN, "01")


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        VALID[:-1],
        VALID + "0",
        VALID + "-extra",  # version 00 has exactly four fields
        VALID.upper(),
        f"00-{'0' * 32}-{SPAN}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"ff-{TRACE}-{SPAN}-01",
        f"0g-{TRACE}-{SPAN}-01",
        f"00_{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-0x",
        b"\xff" * 55,
    ],
)
def test_invalid_values_of_either_type_are_none(header: str | bytes) -> None:
    assert tracecontext.parse(header) is None


def test_a_later_version_keeps_the_fields_it_shares() -> None:
    assert tracecontext.parse(f"01-{TRACE}-{SPAN}-01-more") == (TRACE, SPAN, "01")
    assert tracecontext.parse(f"01-{TRACE}-{SPAN}-01x") is None
