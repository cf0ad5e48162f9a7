"""W3C Trace Context's ``traceparent`` header: parse it, make ids, write it.

``00-<trace id: 32 hex>-<parent id: 16 hex>-<flags: 2 hex>``. Imported by the instance runtime
too, so it depends on nothing but the standard library. Ids come from ``random``, not
``secrets``: they must be unique, not unguessable, and a ``getrandom()`` call per request would
cost more than the rest of this module together.
"""

from __future__ import annotations

import random
import re
from typing import NamedTuple

HEADER = "traceparent"
VERSION = "00"
SAMPLED = "01"

_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# Lower-case hex only: the specification asks receivers to drop anything else.
_FIELDS = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


class TraceParent(NamedTuple):
    trace_id: str
    parent_id: str
    flags: str  # two hex digits, as in the header ("01": sampled)

    @property
    def sampled(self) -> bool:
        return bool(int(self.flags, 16) & 1)


def parse(header: str | bytes) -> TraceParent | None:
    """The header's fields, or None when it is not a valid ``traceparent``.

    Version 00 is exactly four fields. A later version may append fields (after a ``-``); its
    first four are read as version 00's, as the specification asks. Version ``ff`` is invalid,
    and so are all-zero ids (and, from the router, bytes that are not ASCII)."""
    if isinstance(header, bytes):
        try:
            header = header.decode("ascii")
        except UnicodeDecodeError:
            return None
    value = header.strip(" \t")
    match = _FIELDS.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    if version == VERSION:
        if len(value) != 55:
            return None
    elif len(value) > 55 and value[55] != "-":
        return None
    return TraceParent(trace_id, parent_id, flags)


def new_trace_id() -> str:
    while True:
        bits = random.getrandbits(128)
        if bits:
            return f"{bits:032x}"


def new_span_id() -> str:
    while True:
        bits = random.getrandbits(64)
        if bits:
            return f"{bits:016x}"


def format(trace_id: str, span_id: str, flags: str | int = SAMPLED) -> str:
    """The ``traceparent`` value (version 00) naming ``span_id`` as the receiver's parent."""
    if isinstance(flags, int):
        flags = f"{flags & 0xFF:02x}"
    return f"{VERSION}-{trace_id}-{span_id}-{flags}"
