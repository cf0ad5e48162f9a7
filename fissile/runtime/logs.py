"""What a function writes, tagged for its log: the level of each line and the invocation it
was written for.

An instance's stdout and stderr share one pipe, which the supervisor's ``LogBook`` reads. Lines
the runtime tags start with ``MARK``, then the level, the invocation id (``-`` for none) and the
text: ``\\x1eINFO 5f3a-00000001 hello``. The tag rides in the write the line costs anyway; a line
without one (a subprocess, a program, bytes written to ``sys.stdout.buffer``) is kept as it is.

- ``logging`` records (``context.logger``, the root logger, Flask's ``app.logger``) at INFO and
  above: their level;
- ``print`` and other writes to ``sys.stdout`` / ``sys.stderr``: ``STDOUT`` / ``STDERR``;
- the runtime's reports of a function's failure (tracebacks): ``ERROR``.
"""

from __future__ import annotations

import io
import logging
import sys
from contextvars import ContextVar
from typing import TextIO

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


class TaggedStream(io.TextIOBase):
    """``sys.stdout`` / ``sys.stderr`` of an instance: each line written starts with its tag."""

    def __init__(self, stream: TextIO, level: str) -> None:
        super().__init__()
        self._stream = stream
        self._level = level
        self._fresh = True  # the next write starts a line

    def write(self, text: str) -> int:
        size = len(text)
        if not size:
            return 0
        fresh = self._fresh
        # Threads may share the flag: a lost race costs one line its tag, never its text.
        self._fresh = text[-1] == "\n"
        inner = text.find("\n", 0, size - 1) >= 0
        if not (fresh or inner):  # most of print's writes: a word, a space, the newline
            self._stream.write(text)
            return size
        prefix = f"{MARK}{self._level} {invocation.get()} "
        if inner:
            text = text[:-1].replace("\n", "\n" + prefix) + text[-1]
        self._stream.write(prefix + text if fresh else text)
        return size

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self._stream.errors

    @property
    def buffer(self) -> io.BufferedIOBase:
        return self._stream.buffer  # type: ignore[return-value]


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
    sys.stdout = TaggedStream(stdout, "STDOUT")
    sys.stderr = TaggedStream(stderr, "STDERR")
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
