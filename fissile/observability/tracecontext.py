"""W3C Trace Context's ``traceparent`` header: ``00-<trace id>-<parent id>-<flags>``.

The router continues a client's trace (or starts one) and names its own hop; the runtime and
the tracing exporter read the same header. Ids come from ``random.getrandbits`` (a Mersenne
Twister seeded once from the OS): trace ids need to be unique, not secret, and a ``getrandom()``
call per request (``secrets``) cost about three times as much (timeit).
"""

from __future__ import annotations

import random

HEADER = "traceparent"
VERSION = "00"
SAMPLED = "01"  # the flags of a trace the router starts: recorded by whoever exports spans

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_getrandbits = random.getrandbits


def parse(header: str | bytes) -> tuple[str, str, str] | None:
    """``(trace id, parent id, flags)`` of a valid ``traceparent``, else None (which a receiver
    treats as no header: a new trace starts).

    Version 00 must be exactly 55 characters; a later version may append fields after a dash
    (the specification's forward compatibility), which are ignored. Version ff is invalid, and
    so are all-zero ids and upper-case hex."""
    if isinstance(header, bytes):
        try:
            header = header.decode("ascii")
        except UnicodeDecodeError:
            return None
    header = header.strip()
    if len(header) < 55 or header[2] != "-" or header[35] != "-" or header[52] != "-":
        return None
    version = header[:2]
    if not _HEX.issuperset(version) or version == "ff":
        return None
    if len(header) > 55 and (version == VERSION or header[55] != "-"):
        return None
    trace_id = header[3:35]
    parent_id = header[36:52]
    flags = header[53:55]
    if not (_HEX.issuperset(trace_id) and _HEX.issuperset(parent_id) and _HEX.issuperset(flags)):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, flags


def new_trace_id() -> str:
    """32 lower-case hex digits, never all zero."""
    return f"{_getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    """16 lower-case hex digits, never all zero."""
    return f"{_getrandbits(64) or 1:016x}"


def format(trace_id: str, span_id: str, flags: str = SAMPLED) -> str:
    """The ``traceparent`` value naming span ``span_id`` of trace ``trace_id``."""
    return f"{VERSION}-{trace_id}-{span_id}-{flags}"
