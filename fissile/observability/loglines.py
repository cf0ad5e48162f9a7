"""The lines of a function's log file, and the filters ``fissile fn logs`` applies to them.

One line per entry, fields separated by single spaces::

    2026-01-02T03:04:05.678Z 3f9c2a1b INFO [5f3a9e-00000001] hello
    <time, UTC>              <source> <level> [<invocation id or ->] <message>

The source is the instance that wrote the line, or ``fissile`` for the platform's own notes.
Levels are the standard ones (DEBUG to CRITICAL) for ``logging`` records and the platform's
notes, ``STDOUT`` / ``STDERR`` for what a function printed, and ``OUTPUT`` for output nobody
tagged (a subprocess, a program). Lines written before this format had only time, source and
message: they read as ``OUTPUT`` (``INFO`` for the platform's).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

PLATFORM = "fissile"
NO_INVOCATION = "-"

# How each level ranks for ``--level``: output ranks with INFO, except stderr, which by
# convention carries diagnostics.
RANKS = {
    "DEBUG": 10,
    "INFO": 20,
    "STDOUT": 20,
    "OUTPUT": 20,
    "WARNING": 30,
    "STDERR": 30,
    "ERROR": 40,
    "CRITICAL": 50,
}
_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL"}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class LogLine:
    time: str
    source: str
    level: str
    invocation_id: str | None
    message: str

    @property
    def platform(self) -> bool:
        return self.source == PLATFORM

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "instance": None if self.platform else self.source,
            "level": self.level,
            "invocation_id": self.invocation_id,
            "message": self.message,
            "source": "platform" if self.platform else "function",
        }


def stamp(moment: datetime) -> str:
    """The time field: UTC, milliseconds; it sorts as text."""
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def body(source: str, level: str, invocation_id: str | None, message: str) -> str:
    """A line without its time (the ``LogBook`` stamps it as it writes)."""
    return f"{source} {level} [{invocation_id or NO_INVOCATION}] {message}"


def parse(line: str) -> LogLine:
    time, _, rest = line.rstrip("\n").partition(" ")
    source, _, rest = rest.partition(" ")
    level, _, after = rest.partition(" ")
    field, _, message = after.partition(" ")
    if level in RANKS and len(field) >= 3 and field[0] == "[" and field[-1] == "]":
        invocation = field[1:-1]
        return LogLine(
            time, source, level, None if invocation == NO_INVOCATION else invocation, message
        )
    legacy = "INFO" if source == PLATFORM else "OUTPUT"
    return LogLine(time, source, legacy, None, rest)


def level_rank(name: str) -> int:
    """The rank of a level named by a user (any case, ``warn`` too); ValueError if unknown."""
    upper = name.strip().upper()
    upper = _ALIASES.get(upper, upper)
    if upper not in RANKS:
        raise ValueError(f"unknown level {name!r}: use debug, info, warning, error or critical")
    return RANKS[upper]


def parse_since(text: str, now: datetime | None = None) -> str:
    """``--since``: a duration back from now (``90s``, ``10m``, ``2h``, ``1d``, ``1h30m``) or an
    ISO 8601 time (UTC unless it says otherwise); the time field it starts from."""
    text = text.strip()
    pieces = _DURATION.findall(text)
    if pieces and "".join(n + u for n, u in pieces) == text:
        seconds = sum(float(n) * _SECONDS[u] for n, u in pieces)
        return stamp((now or datetime.now(UTC)) - timedelta(seconds=seconds))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"invalid --since {text!r}: give a duration (10m, 2h, 1d) or an ISO time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return stamp(moment)


def split_lines(data: bytes) -> list[bytes]:
    """``data``'s lines, each with its newline (the last may lack one). Only at newlines: a
    message may hold a carriage return, which ``bytes.splitlines`` would also split at."""
    lines = [line + b"\n" for line in data.split(b"\n")]
    last = lines.pop()
    if last != b"\n":
        lines.append(last[:-1])
    return lines


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which lines to keep: from ``since`` (a time field) on, ranked ``level`` or above, from
    ``instance`` (an instance id, or ``fissile``)."""

    since: str | None = None
    level: int | None = None
    instance: str | None = None

    @property
    def everything(self) -> bool:
        return self.since is None and self.level is None and self.instance is None

    def keeps(self, line: LogLine) -> bool:
        if self.since is not None and line.time < self.since:
            return False
        if self.level is not None and RANKS.get(line.level, 20) < self.level:
            return False
        return self.instance is None or line.source == self.instance


class LogView:
    """A filter and a format (the file's text, or one JSON object per line) applied to raw
    lines of a log file."""

    def __init__(self, keep: LogFilter, as_json: bool = False) -> None:
        self.keep = keep
        self.as_json = as_json

    @property
    def passthrough(self) -> bool:
        """Whether every line goes out as it is (what reading the file as bytes gives)."""
        return self.keep.everything and not self.as_json

    def line(self, raw: bytes) -> bytes | None:
        """``raw`` (one line, its newline included) as it is to be sent; None to skip it."""
        parsed = parse(raw.decode("utf-8", "replace"))
        if not self.keep.keeps(parsed):
            return None
        return self._render(parsed, raw)

    def history(self, data: bytes, tail: int | None) -> bytes:
        """The last ``tail`` lines of ``data`` that pass (all of them for None). Read from the
        end: a short tail of a large file parses only what it shows."""
        kept: list[bytes] = []
        if tail == 0:
            return b""
        for raw in reversed(split_lines(data)):
            parsed = parse(raw.decode("utf-8", "replace"))
            # Lines are written in time order: past the first older line, all are older.
            if self.keep.since is not None and parsed.time < self.keep.since:
                break
            if self.keep.keeps(parsed):
                kept.append(self._render(parsed, raw))
                if tail is not None and len(kept) >= tail:
                    break
        kept.reverse()
        return b"".join(kept)

    def _render(self, parsed: LogLine, raw: bytes) -> bytes:
        if self.as_json:
            return json.dumps(parsed.to_json()).encode() + b"\n"
        return raw if raw.endswith(b"\n") else raw + b"\n"
