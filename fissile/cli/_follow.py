"""What ``fissile dev`` prints while it runs: each request of the router's access log and each
line of the functions' logs, read from the platform's data dir as they are written."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from fissile.observability import loglines

Echo = Callable[[str], None]


class Tail:
    """The lines appended to one file since it was first seen, across its rotation (the log
    is renamed to ``<file>.1`` and a new one started)."""

    def __init__(self, path: Path, from_start: bool) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._inode = 0
        self._partial = ""
        self._from_start = from_start

    def lines(self) -> list[str]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        found: list[str] = []
        if self._file is not None and stat.st_ino != self._inode:
            found += self._read()  # what the rotated file got last
            self._close()
            self._from_start = True  # a new file: all of it is new
        if self._file is None:
            try:
                self._file = open(self.path, encoding="utf-8", errors="replace")  # noqa: SIM115
            except FileNotFoundError:
                return found
            self._inode = os.fstat(self._file.fileno()).st_ino
            if not self._from_start:
                self._file.seek(0, os.SEEK_END)
        return found + self._read()

    def _read(self) -> list[str]:
        assert self._file is not None
        text = self._partial + self._file.read()
        *complete, self._partial = text.split("\n")
        return complete

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        self._close()


class Follower:
    """Polled by ``fissile dev``: prints what the platform logged since the last poll.

    Files there when it starts were written before (a kept data dir): only what is appended
    is shown."""

    def __init__(self, data_dir: Path, echo: Echo) -> None:
        self.echo = echo
        self.functions_dir = data_dir / "logs" / "functions"
        access = data_dir / "logs" / "access.log"
        self.access = Tail(access, from_start=not access.exists())
        self._before = set(self._function_logs())
        self._tails: dict[str, Tail] = {}

    def _function_logs(self) -> list[Path]:
        try:
            return sorted(self.functions_dir.glob("*.log"))
        except OSError:
            return []

    def poll(self) -> None:
        for path in self._function_logs():
            name = path.name[: -len(".log")]
            tail = self._tails.get(name)
            if tail is None:
                tail = self._tails[name] = Tail(path, from_start=path not in self._before)
            for line in tail.lines():
                if line:
                    self.echo(function_line(name, line))
        for line in self.access.lines():
            if line:
                self.echo(request_line(line))

    def close(self) -> None:
        self.access.close()
        for tail in self._tails.values():
            tail.close()


def request_line(line: str) -> str:
    """An access log record (JSON, as ``fissile dev`` has the platform write it) as
    ``HH:MM:SS GET /path -> 200 fn=name 1.2ms``, with ``cold`` on a cold start."""
    try:
        record = json.loads(line)
        fields = [
            _clock(str(record["time"])),
            str(record["method"]),
            str(record["path"]),
            f"-> {record['status']}",
            f"fn={record.get('function') or '-'}",
            f"{float(record['duration_ms']):.1f}ms",
        ]
    except (ValueError, KeyError, TypeError):
        return line  # not a record (a note of the log's own): as it is
    if record.get("cold"):
        fields.append("cold")
    return " ".join(fields)


def function_line(function: str, line: str) -> str:
    """A function log line as ``HH:MM:SS name | message``: what the function printed as it
    is, its log records and the platform's notes about it with their level."""
    parsed = loglines.parse(line)
    tag = "" if parsed.level in ("STDOUT", "OUTPUT") else f" {parsed.level}"
    if parsed.platform:
        tag = f" (fissile){tag}"
    return f"{_clock(parsed.time)} {function}{tag} | {parsed.message}"


def _clock(stamp: str) -> str:
    # 2026-01-02T03:04:05.678Z: the time of day (UTC), enough to follow a session.
    return stamp[11:19] if len(stamp) >= 19 else stamp
