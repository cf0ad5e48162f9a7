"""What a function writes, tagged for its log: the level of each line and the invocation it
was written for.

An instance's stdout and stderr share one pipe, which the supervisor's ``LogBook`` reads. Lines
the runtime tags start with ``MARK``, then the level, the invocation id (``-`` for none) and the
text: ``\\x1eINFO 5f3a9e0100000001 hello``. The tag rides in the write the line costs anyway; a
line without one (a subprocess, a program) is kept as it is.

- ``logging`` records (``context.logger``, the root logger, Flask's ``app.logger``) at INFO and
  above: their level;
- ``print`` and other writes to ``sys.stdout`` / ``sys.stderr`` (and their ``.buffer``):
  ``STDOUT`` / ``STDERR``;
- the runtime's reports of a function's failure (tracebacks): ``ERROR``.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from contextvars import ContextVar
from typing import Any, TextIO

MARK = "\x1e"  # ASCII record separator: never the start of a line anyone prints
NO_INVOCATION = "-"

#: The invocation being served: set around each call, so each thread and each task (async
#: functions, and the tasks they start) sees its own.
invocation: ContextVar[str] = ContextVar("fissile_invocation", default=NO_INVOCATION)

_LEVELS = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}
# What errors are written to once installed: the instance's own stderr, whatever a function
# later puts in ``sys.stderr``.
_stderr: TextIO | None = None


def invocation_tag(invocation_id: str) -> str:
    """The id as a log field: one word, ``-`` for none."""
    if not invocation_id:
        return NO_INVOCATION
    if invocation_id.isprintable() and " " not in invocation_id:
        return invocation_id
    return "".join(c if c.isprintable() and c != " " else "_" for c in invocation_id)


def tag(level: str, text: str) -> str:
    """``text`` (one or more lines, no final newline) with each line tagged."""
    prefix = f"{MARK}{level} {invocation.get()} "
    return prefix + text.replace("\n", "\n" + prefix)


def level_name(levelno: int) -> str:
    """A record's level as one of the standard names (custom levels round down)."""
    name = _LEVELS.get(levelno)
    if name is not None:
        return name
    below = [level for level in _LEVELS if level <= levelno]
    return _LEVELS[max(below)] if below else "DEBUG"


class TaggedWriter(io.RawIOBase):
    """The file descriptor under an instance's ``sys.stdout`` / ``sys.stderr``: each line starts
    with its tag. Under the text layer, so it runs once per line flushed (not per piece ``print``
    writes) and ``sys.stdout.buffer`` writes are tagged too."""

    def __init__(self, under: TextIO, level: str) -> None:
        super().__init__()
        self._under = under  # kept: closing it (when collected) may close the descriptor
        self._fd = under.fileno()
        self._level = level
        self._fresh = True  # the next write starts a line

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        size = len(chunk)
        if not size:
            return 0
        fresh = self._fresh
        # Threads may share the flag: a lost race costs one line its tag, never its text.
        self._fresh = chunk[-1] == 10  # a newline
        inner = chunk.find(b"\n", 0, size - 1) >= 0
        if fresh or inner:
            prefix = f"{MARK}{self._level} {invocation.get()} ".encode()
            if inner:
                chunk = chunk[:-1].replace(b"\n", b"\n" + prefix) + chunk[-1:]
            if fresh:
                chunk = prefix + chunk
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view) :]
        return size


def tagged_stream(stream: TextIO, level: str) -> TextIO:
    """A text stream like ``stream`` (same descriptor, encoding, line buffering) whose lines
    are tagged ``level``."""
    stream.flush()
    writer = TaggedWriter(stream, level)
    # A raw writer under the text layer, as the zygote's own streams are (no buffer between).
    return io.TextIOWrapper(
        writer,  # type: ignore[type-var]
        encoding=stream.encoding,
        errors=stream.errors,
        line_buffering=True,
    )


class LineHandler(logging.Handler):
    """Writes each record as tagged lines: its message (and traceback) under its level."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            # One write per record, flushed by the stream's line buffering.
            self.stream.write(tag(level_name(record.levelno), text) + "\n")
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def install() -> None:
    """Tag this process's output and send ``logging`` (INFO and up) to it; once, in an
    instance, before any function is loaded."""
    global _stderr
    if _stderr is not None:
        return
    stdout, stderr = sys.stdout, sys.stderr
    _stderr = stderr
    sys.stdout = tagged_stream(stdout, "STDOUT")
    sys.stderr = tagged_stream(stderr, "STDERR")
    root = logging.getLogger()
    root.addHandler(LineHandler(stderr))
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)  # warnings.warn(...) becomes a WARNING line


def error(text: str) -> None:
    """Report a function's failure (a traceback, a bad answer) in its log, as ERROR lines."""
    text = text.rstrip("\n")
    if _stderr is None:  # not an instance (a test, the zygote): plain text
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
        return
    _stderr.write(tag("ERROR", text) + "\n")
    _stderr.flush()
