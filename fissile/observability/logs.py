"""Function logs: each instance's stdout and stderr arrive on a pipe; lines go to the log file of
the function it serves (or of its environment while it is still warm and unassigned), with the
level and invocation id the instance's runtime tagged them with (``fissile.runtime.logs``) in
the format of ``fissile.observability.loglines``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

from fissile.observability import loglines
from fissile.observability.ratelimit import OutputLimit
from fissile.runtime.logs import MARK

logger = logging.getLogger("fissile.logs")

MAX_LOG_BYTES = 10 * 1024 * 1024
_MAX_LINE = 16384
# Per instance; past them, output is dropped and a note says how much (at most once a second).
OUTPUT_LINES_PER_SECOND = 1000
OUTPUT_BYTES_PER_SECOND = 1024 * 1024
NOTE_INTERVAL = 1.0


class LogSource(Protocol):
    id: str
    env: str
    function: str | None


class LogBook:
    def __init__(
        self,
        root: Path,
        lines_per_second: float = OUTPUT_LINES_PER_SECOND,
        bytes_per_second: float = OUTPUT_BYTES_PER_SECOND,
    ) -> None:
        self.root = root
        self.lines_per_second = lines_per_second
        self.bytes_per_second = bytes_per_second
        (root / "functions").mkdir(parents=True, exist_ok=True)
        (root / "environments").mkdir(parents=True, exist_ok=True)
        self._files: dict[Path, IO[str]] = {}
        self._dropped = 0  # lines lost to a write error (a full disk), since the last one fit

    def function_log(self, function: str) -> Path:
        return self.root / "functions" / f"{function}.log"

    def environment_log(self, env: str) -> Path:
        return self.root / "environments" / f"{env}.log"

    def attach(self, source: LogSource, fd: int) -> None:
        """Read ``fd`` (the read end of an instance's output pipe) until it closes."""
        os.set_blocking(fd, False)
        loop = asyncio.get_running_loop()
        pending = bytearray()
        limit = OutputLimit(self.lines_per_second, self.bytes_per_second)
        noting: asyncio.TimerHandle | None = None
        last_note = -NOTE_INTERVAL
        # The tag of a line cut at _MAX_LINE, for the rest of it.
        carry: tuple[str, str | None] | None = None

        def write_note() -> None:
            nonlocal noting, last_note
            noting = None
            last_note = loop.time()
            text = limit.note()
            if text is not None:
                self._record(source, "WARNING", None, text)

        def readable() -> None:
            nonlocal noting, carry
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(fd)
                os.close(fd)
                closed = getattr(source, "output_closed", None)
                if pending:
                    limit.refill()
                    if limit.admit(len(pending)):
                        self._emit(source, bytes(pending), carry)
                    else:
                        limit.drop(1, len(pending))
                if noting is not None:
                    noting.cancel()
                write_note()
                if closed is not None:
                    closed.set()
                return
            pending.extend(data)
            limit.refill()
            while True:
                end = pending.find(b"\n")
                if end >= 0:
                    line, cut = bytes(pending[:end]), end + 1
                elif len(pending) > _MAX_LINE:
                    line, cut = bytes(pending[:_MAX_LINE]), _MAX_LINE
                else:
                    break
                if not limit.admit(len(line)):
                    _drop_lines(pending, limit)
                    carry = None
                    break
                tagged = self._emit(source, line, carry)
                carry = tagged if end < 0 else None
                del pending[:cut]
            if limit.dropped_lines and noting is None:
                delay = max(0.0, last_note + NOTE_INTERVAL - loop.time())
                noting = loop.call_later(delay, write_note)

        loop.add_reader(fd, readable)

    def _emit(
        self, source: LogSource, line: bytes, carry: tuple[str, str | None] | None = None
    ) -> tuple[str, str | None]:
        """Write one line of output; ``carry`` is the tag of the line it continues, if any.
        Returns the line's tag."""
        text = line.decode("utf-8", "replace").rstrip()
        level, invocation = carry or ("OUTPUT", None)
        if carry is None and text.startswith(MARK):
            level, invocation, text = _untag(text)
        self._record(source, level, invocation, text)
        return level, invocation

    def _record(self, source: LogSource, level: str, invocation: str | None, message: str) -> None:
        target = (
            self.function_log(source.function)
            if source.function
            else self.environment_log(source.env)
        )
        self._write(target, loglines.body(source.id, level, invocation, message))
        # A starting program's last lines, for the error should it not start.
        tail = getattr(source, "tail", None)
        if tail is not None:
            tail.append(message)

    def platform(
        self, function: str, message: str, level: str = "INFO", invocation: str | None = None
    ) -> None:
        """A line from fissile itself about a function (crashes, timeouts, rollouts)."""
        line = loglines.body(loglines.PLATFORM, level, invocation, message)
        self._write(self.function_log(function), line)

    def forget(self, function: str) -> None:
        path = self.function_log(function)
        handle = self._files.pop(path, None)
        if handle is not None:
            handle.close()
        path.unlink(missing_ok=True)
        path.with_suffix(".log.1").unlink(missing_ok=True)

    def _write(self, path: Path, text: str) -> None:
        try:
            self._append(path, text)
        except OSError as exc:
            # A full disk must not take down whoever logs (the executor, an output pipe's
            # reader): the line is dropped, and the count is written once lines fit again.
            handle = self._files.pop(path, None)
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()  # closes the fd even when flushing what is left fails
            if not self._dropped:
                logger.warning("function log lines are being dropped: %s: %s", path, exc)
            self._dropped += 1
            return
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            logger.warning("%d function log lines were dropped (write errors)", dropped)

    def _append(self, path: Path, text: str) -> None:
        handle = self._files.get(path)
        if handle is None:
            handle = self._files[path] = path.open("a", encoding="utf-8", buffering=1)
        handle.write(f"{loglines.stamp(datetime.now(UTC))} {text}\n")
        if handle.tell() > MAX_LOG_BYTES:
            handle.close()
            os.replace(path, path.with_suffix(".log.1"))
            del self._files[path]

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()


def _untag(text: str) -> tuple[str, str | None, str]:
    """A tagged line's level, invocation id and text; one that only looks tagged (a level
    nobody knows) is output like any other."""
    level, _, rest = text[len(MARK) :].partition(" ")
    invocation, _, message = rest.partition(" ")
    if level not in loglines.RANKS or not invocation:
        return "OUTPUT", None, text[len(MARK) :]
    return level, None if invocation == loglines.NO_INVOCATION else invocation, message


def _drop_lines(pending: bytearray, limit: OutputLimit) -> None:
    """Drop every whole line in ``pending`` at once (a flood is counted, never split line by
    line), keeping the start of an unfinished one."""
    last = pending.rfind(b"\n")
    if last >= 0:
        limit.drop(pending.count(b"\n"), last + 1)
        del pending[: last + 1]
    if len(pending) > _MAX_LINE:
        pieces = len(pending) // _MAX_LINE
        limit.drop(pieces, pieces * _MAX_LINE)
        del pending[: pieces * _MAX_LINE]
