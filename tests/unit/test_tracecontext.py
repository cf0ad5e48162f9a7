import pytest

from fissile.observability import tracecontext

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"


def test_parse_valid() -> None:
    assert tracecontext.parse(VALID) == (TRACE, PARENT, "01")
    assert tracecontext.parse(VALID.encode()) == (TRACE, PARENT, "01")
    assert tracecontext.parse(f" {VALID} ") == (TRACE, PARENT, "01")


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        VALID[:-1],
        VALID + "0",
        VALID + "-extra",  # version 00 has exactly four fields
        VALID.upper(),
        f"00-{'0' * 32}-{PARENT}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"ff-{TRACE}-{PARENT}-01",
        f"0g-{TRACE}-{PARENT}-01",
        f"00_{TRACE}-{PARENT}-01",
        f"00-{TRACE}-{PARENT}-0x",
        b"\xff" * 55,
    ],
)
def test_parse_invalid(header: str | bytes) -> None:
    assert tracecontext.parse(header) is None


def test_parse_future_version_keeps_known_fields() -> None:
    assert tracecontext.parse(f"01-{TRACE}-{PARENT}-01-more") == (TRACE, PARENT, "01")
    assert tracecontext.parse(f"01-{TRACE}-{PARENT}-01x") is None


def test_new_ids_are_hex_of_their_length_and_differ() -> None:
    traces = {tracecontext.new_trace_id() for _ in range(100)}
    spans = {tracecontext.new_span_id() for _ in range(100)}
    assert len(traces) == 100 and len(spans) == 100
    for trace_id in traces:
        assert len(trace_id) == 32 and int(trace_id, 16) != 0 and trace_id == trace_id.lower()
    for span_id in spans:
        assert len(span_id) == 16 and int(span_id, 16) != 0


def test_format_round_trips() -> None:
    span = tracecontext.new_span_id()
    header = tracecontext.format(TRACE, span)
    assert header == f"00-{TRACE}-{span}-01"
    assert tracecontext.parse(header) == (TRACE, span, "01")
    assert tracecontext.format(TRACE, span, "00").endswith("-00")
