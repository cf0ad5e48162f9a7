"""The router's access log: one line per client request, and each function's last requests in
memory for ``GET /v1/functions/{name}/requests``.

Off the hot path: where the log keeps a file in the json format and the C module was built, a
request's record (``Record``: the router's ``Trip``) is formatted as a JSON line, counted into
its function's metrics and kept among its function's last lines by one C call
(``_records.Journal``, ~0.3 µs), and let go with its request. Every ``INTERVAL`` seconds, or at
``BATCH`` records, the lines gathered go down a pipe to a writer process (``start``; ``python
-m fissile.observability.access``, in a session and scheduler autogroup of its own, at a lower
priority) that appends them: a slow disk delays the log, never the router. Where that module
was not built (no C compiler when fissile was installed), or for the text format, records
gather in a list and are packed ``CHUNK`` at a time: counted, then marshalled to the writer
process, which formats them in Python (~2 µs a record). Without a writer process (``start``
not called), a thread of the log's own writes. What waits is bounded: past ``MAX_PENDING``
records (or ``MAX_PIPE_BUFFER`` unread by the writer process) lines are dropped and counted,
and a line says so once writing catches up. The file is rotated like the function logs
(``<file>.1``, at 10 MiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import marshal
import os
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from operator import attrgetter, itemgetter
from pathlib import Path
from queue import SimpleQueue
from typing import Any, Literal

from fissile.observability.logs import MAX_LOG_BYTES
from fissile.observability.metrics import DURATION_BUCKETS, Metrics

try:
    from fissile.observability import _records
except ImportError:  # installed without a C compiler: lines formatted, counts made in Python
    _records = None  # type: ignore[assignment]

logger = logging.getLogger("fissile.access")

Format = Literal["json", "text", "off"]
FORMATS: tuple[str, ...] = ("json", "text", "off")

# (function, route, method, path, client): what requests to one endpoint share. The router
# makes one per request; the formatters spell what repeats once (format_lines by the tuple's
# value, _records.c by its content) and copy it after (docs/observability.md, "Request
# metrics: cost").
Endpoint = tuple[str | None, str | None, str, str, str | None]

# A record's fields as a tuple, in ``Record``'s order: what the writer process is sent
# (marshal takes tuples, not objects) and what ``format_lines`` and ``_records`` read.
RecordFields = tuple[
    float,
    Endpoint,
    int,
    int | None,
    float,
    float | None,
    str | None,
    bool,
    int | str | None,
    bytes | str | None,
]


# A record's fields, in the order of its tuple (``RecordFields``) and of ``_records.c``.
FIELDS = (
    "started",
    "endpoint",
    "status",
    "size",
    "duration",
    "waited",
    "instance",
    "cold",
    "invocation",
    "trace",
)


class Record:
    """One request as the access log keeps it: ``started`` is ``time.monotonic()`` at arrival
    (the wall clock is derived when written: one ``time.time()`` per batch, not per request);
    the invocation id may be an int (a counter) and the trace id bytes, spelt out when
    written; durations are in seconds; a field not known is None.

    The router's ``Trip`` (``router/proxy.py``) is a ``Record``: forwarding fills in its
    fields as it learns them, routing sets its endpoint and the answer its status and size, so
    the log keeps the object that was there anyway instead of a tuple built from it per
    request (~0.6k instructions a request fewer, callgrind). Once added, a record is not
    changed."""

    __slots__ = FIELDS

    started: float
    endpoint: Endpoint
    status: int
    size: int | None
    duration: float
    waited: float | None
    instance: str | None
    cold: bool
    invocation: int | str | None
    trace: bytes | str | None

    def __init__(
        self,
        started: float,
        endpoint: Endpoint,
        status: int,
        size: int | None,
        duration: float,
        waited: float | None,
        instance: str | None,
        cold: bool,
        invocation: int | str | None,
        trace: bytes | str | None,
    ) -> None:
        self.started = started
        self.endpoint = endpoint
        self.status = status
        self.size = size
        self.duration = duration
        self.waited = waited
        self.instance = instance
        self.cold = cold
        self.invocation = invocation
        self.trace = trace

    def fields(self) -> RecordFields:
        return _FIELDS(self)

    def __repr__(self) -> str:
        return f"Record{self.fields()!r}"


# A record's fields, in one C call (``Record.fields``).
_FIELDS = attrgetter(*FIELDS)

_Journal: type[_records.Journal] | None
_json_lines: Callable[[Sequence[Record | RecordFields], float, str], bytes] | None
_tally: Callable[[Sequence[Record | RecordFields], tuple[float, ...]], list[Any]] | None
_functions: Callable[[Sequence[Record]], list[str | None]] | None
if _records is not None:
    _records.bind(Record)  # C reads a Record's fields where its slots are
    _json_lines, _tally, _functions = _records.json_lines, _records.tally, _records.functions
    _Journal = _records.Journal
else:
    _json_lines = _tally = _functions = None
    _Journal = None

INTERVAL = 0.15  # seconds between writes, at most
BATCH = 1024  # records that start a write before the interval is over
# Records marshalled together as they gather, when a writer process takes them: a request's
# record then dies a few ms after it was made, its memory still in the CPU's cache and used
# again by the next ones. Kept for a whole batch (~330 bytes a record), each was made,
# marshalled and freed out of the caches, and the router's allocations and CPU per request
# grew with it (docs/observability.md, "Request metrics: cost").
CHUNK = 128
MAX_PENDING = 65536  # records waiting to be written, past which they are dropped
RECENT = 200  # records kept per function for the API
BACKUPS = 5  # rotated files kept: access.log.1 (the newest) to access.log.5
# Bytes of batches the writer process has not read yet, past which batches are dropped.
MAX_PIPE_BUFFER = 16 * 1024 * 1024
# The writer process's niceness: under a saturated machine the router and the instances come
# first; the log falls behind (bounded by MAX_PIPE_BUFFER, then dropped and counted) and
# catches up when the load eases.
WRITER_NICE = 10
_FRAME = struct.Struct(">I")  # a batch's length, before it on the writer process's pipe
# A batch of lines formatted already (the journal's): its length with _LINES set, and how many
# records it holds.
_LINES_FRAME = struct.Struct(">II")
_LINES = 1 << 31
# The writer process's pipe, made large enough for a batch (BATCH records of ~330 bytes) to go
# in one write (Linux's default is 64 KiB; its default ceiling for an unprivileged process,
# /proc/sys/fs/pipe-max-size, 1 MiB).
PIPE_SIZE = 1 << 20
# Buffers ``writev()`` takes at once (POSIX's minimum is 16; Linux's 1024).
_IOV_MAX = max(16, os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 16)


class AccessLog:
    """Created on the event loop that serves the router (``add`` is called only from it)."""

    def __init__(
        self,
        path: Path | None,
        format: Format = "json",
        *,
        recent: int = RECENT,
        interval: float = INTERVAL,
        batch: int = BATCH,
        chunk: int = CHUNK,
        max_pending: int = MAX_PENDING,
        max_bytes: int = MAX_LOG_BYTES,
        backups: int = BACKUPS,
        invocation_prefix: str = "",
        in_process: bool | None = None,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"access log format must be one of {', '.join(FORMATS)}")
        self.path = path if format != "off" else None
        self.format = format
        self.enabled = format != "off"
        self.interval = interval
        self.batch = batch
        self.chunk = chunk
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.backups = backups
        # Direct calls' invocation ids are a per-process prefix and a counter (router/app.py):
        # the counter is kept, the id spelt out when written.
        self.invocation_prefix = invocation_prefix
        # Lines formatted in this process (in C where it can, json; ``start`` then starts no
        # writer process), or by a writer process. None: in this process when C can.
        native = format == "json" and _json_lines is not None
        self.in_process = native if in_process is None else in_process
        self._native = native
        self.keep = recent
        self._dropped = 0  # records lost (writing could not keep up, or failed), in all
        self._unreported = 0  # of which no line has said so yet
        self._pending: list[Record] = []
        self._folded = 0  # of ``_pending``, already in ``_recent`` (``_fold``)
        # The functions' metrics the records are counted into (``count_into``), and how many
        # of ``_pending`` were; records added but not to be counted (``add_uncounted``).
        self.metrics: Metrics | None = None
        self._counting_thread = 0
        self._tallied = 0
        self._uncounted: list[Record] = []
        self._recent: dict[str, deque[Record]] = {}
        self._quoted: dict[str | None, str] = {}  # the writer thread's (format_lines)
        # format_lines's: the fields a record shares with others to its endpoint, spelt.
        self._spelt: dict[tuple[Endpoint, int, int | None], tuple[str, str]] = {}
        self._timer: asyncio.TimerHandle | None = None
        # The writer thread (``_write_batches``): batches of lines handed to it, and its
        # counts of records it finished and lost, each written by one side only (no lock).
        self._batches: SimpleQueue[tuple[list[bytes], int] | None] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._handed = 0
        self._finished = 0
        self._lost = 0
        self._lost_seen = 0
        self._watch = 0  # records pending below which ``add`` only appends (``_rewatch``)
        # Chunks of records packed (formatted, or marshalled and framed for the writer
        # process), waiting to be written or sent.
        self._packed: list[bytes] = []
        self._packed_count = 0  # records in them
        self._lock = threading.Lock()  # the file, between the writer thread and close()
        self._file: int | None = None
        self._size = 0
        self._closed = False
        # The writer process (``start``): batches go to it raw; without it, a thread formats
        # and writes them in this process.
        self._process: asyncio.subprocess.Process | None = None
        # Where the log keeps a file and formats json lines in this process in C, each record
        # is formatted, counted and kept as it is added (``_records.Journal``): the record is
        # let go with its request, where a record kept for a chunk was formatted and counted
        # out of the CPU's caches (docs/observability.md, "Request metrics: cost"). Else
        # records gather and are packed in chunks (``_pack``), in Python where need be.
        self._journal = (
            _Journal(invocation_prefix, DURATION_BUCKETS, recent, max_pending, batch)
            if self.path is not None and self.in_process and native and _Journal is not None
            else None
        )
        # Lines of records the journal did not take (of a shape C does not format), spelt in
        # Python, written after its lines.
        self._odd: list[str] = []
        self._odd_count = 0
        if self._journal is not None:
            self._journal.offset = time.time() - time.monotonic()
        # What the router calls with each request's record (``record``): the journal's add
        # (one C call), or the records' list in Python; either returns what ``due`` is to do
        # (0: nothing).
        self.record: Callable[[Record], int] = (
            self._journal.add if self._journal is not None else self._record
        )
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    # -- the hot path ---------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Records lost (writing could not keep up, or failed), in all."""
        journal = self._journal
        return self._dropped + (journal.dropped if journal is not None else 0)

    def add(self, record: Record) -> None:
        """One request's record (on the event loop): formatted, counted and kept by the
        journal where there is one (``record``), else appended to the pending records."""
        journal = self._journal
        if journal is None:
            self._record(record)
        else:
            self._journaled(journal.add, record, counted=True)

    def _record(self, record: Record) -> int:
        """One request's record (on the event loop): a list append. The function's recent
        requests are filled from the records when they are marshalled or written (``_fold``),
        not per request.

        One comparison decides: below ``_watch`` records, a timer is armed and nothing else
        is due (the checks made one by one: 80 ns a record against 55, timeit)."""
        pending = self._pending
        if len(pending) < self._watch:
            pending.append(record)
            return 0
        self._add(record)
        return 0

    def due(self, due: int) -> None:
        """What the journal's ``add`` said is due: 1, the first record pending (the timer
        armed); 2, a batch gathered (written now, unless the writer is busy)."""
        if self._closed:
            return
        if due == 1:
            if self._timer is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self.interval, self._flush)
        elif self._handed == self._finished:
            if self._timer is not None:
                self._timer.cancel()
            self._flush()

    def _journaled(self, add: Callable[[Record], int], record: Record, counted: bool) -> None:
        """``record`` added by the journal's ``add`` (or ``add_uncounted``), and what that
        says is due done; spelt in Python where the journal refuses it."""
        try:
            due = add(record)
        except TypeError:
            self._add_odd(record, counted)
            return
        if due:
            self.due(due)

    def _add_odd(self, record: Record, counted: bool) -> None:
        """A record the journal refused (a field of a type C does not take, or a counter
        out of range): spelt in Python, counted as it can be."""
        self._odd.append(self.format_lines([record], time.time() - time.monotonic()))
        self._odd_count += 1
        if counted and self.metrics is not None:
            self._count([record])
        self.due(1)

    def add_uncounted(self, record: Record) -> None:
        """A record of a request that is counted elsewhere, or not a function's request (the
        router's own answers: ASGI path), which ``count_into`` must not count."""
        journal = self._journal
        if journal is not None:
            self._journaled(journal.add_uncounted, record, counted=False)
            return
        if self.metrics is not None:
            self._uncounted.append(record)
        self._record(record)

    def count_into(self, metrics: Metrics) -> bool:
        """Count the requests of the records added into ``metrics`` (``FunctionMetrics.
        answered``), a chunk at a time as they are packed, and whenever ``metrics`` is read:
        the router's hot path then makes one record per request, not a record and counts.
        False (nothing counted: the caller counts each request) when the log keeps no file,
        as its records are not kept pending then."""
        if self.path is None:
            return False
        self.metrics = metrics
        metrics.pending = self._settle
        self._counting_thread = threading.get_ident()  # the router's loop's, which adds
        if self._journal is not None:
            self._journal.counting = True
        return True

    def _add(self, record: Record) -> None:
        # The thread that adds (the router's loop's) is the one that counts (``_tally``).
        self._counting_thread = threading.get_ident()
        pending = self._pending
        if self.path is None:
            self._keep(record)
            return
        if len(pending) + self._packed_count >= self.max_pending:
            self._keep(record)
            self._dropped += 1
            self._unreported += 1
            if self.metrics is not None:
                # Not written, but answered all the same: counted (unless it is not to be).
                uncounted = any(other is record for other in self._uncounted)
                self._uncounted = [other for other in self._uncounted if other is not record]
                self._tally()
                if not uncounted:
                    self._count([record])
            return
        pending.append(record)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.interval, self._flush)
        if len(pending) >= min(self.chunk, self.batch):
            self._pack()
            if self._packed_count >= self.batch and self._handed == self._finished:
                self._timer.cancel()
                self._flush()
        self._rewatch()

    def _rewatch(self) -> None:
        """``add``'s threshold: 0 (every record looks closer) without a path or a timer
        armed; else one short of a chunk (the record completing it has it packed, and the
        batch written or sent once it is full)."""
        if self.path is None or self._timer is None or self._closed:
            self._watch = 0
        else:
            self._watch = min(self.chunk - 1, self.batch - 1, self.max_pending)

    def _keep(self, record: Record) -> None:
        function = record.endpoint[0]
        if function is not None:
            recent = self._recent.get(function)
            if recent is None:
                recent = self._recent[function] = deque(maxlen=self.keep)
            recent.append(record)

    def _fold(self) -> None:
        """The records added since the last fold, into their functions' recent requests.

        A batch of one function's records (the usual case under load) gives its deque only
        its last ``keep`` records, in one ``extend``: a Python loop over every record cost
        35 ns a record against 15 (timeit)."""
        pending = self._pending
        folded = self._folded
        if folded >= len(pending):
            return
        batch = pending[folded:] if folded else pending
        self._folded = len(pending)
        recents = self._recent
        keep = self.keep
        functions = _distinct_functions(batch)
        if len(functions) == 1:
            function = functions.pop()
            if function is not None:
                recent = recents.get(function)
                if recent is None:
                    recent = recents[function] = deque(maxlen=keep)
                recent.extend(batch[-keep:] if len(batch) > keep else batch)
            return
        for record in batch:
            function = record.endpoint[0]
            if function is not None:
                recent = recents.get(function)
                if recent is None:
                    recent = recents[function] = deque(maxlen=keep)
                recent.append(record)

    def _settle(self) -> None:
        """``Metrics.settle``: the records added so far counted, when read on the thread that
        adds them; a read from another thread gets what was counted so far (the loop adds
        meanwhile, and only it counts)."""
        if threading.get_ident() == self._counting_thread:
            self._tally()

    def _tally(self) -> None:
        """The records added since the last tally, into their functions' metrics (those of
        ``add_uncounted`` left out)."""
        if self._journal is not None:
            self._tally_journal()
            return
        pending = self._pending
        start = self._tallied
        if start >= len(pending):
            return
        self._tallied = len(pending)
        if self.metrics is None or not self.metrics.enabled:
            return
        batch = pending[start:] if start else pending
        if self._uncounted:
            # Kept alive in the list until now, so their ids are theirs.
            skip = set(map(id, self._uncounted))
            self._uncounted.clear()
            batch = [record for record in batch if id(record) not in skip]
        self._count(batch)

    def _tally_journal(self) -> None:
        """The journal's counts since the last tally, into their functions' metrics."""
        assert self._journal is not None
        metrics = self.metrics
        if metrics is None:
            return
        tallies = self._journal.tallies()
        if not metrics.enabled:
            return  # counting was turned off since: taken, not counted
        for function, *counts in tallies:
            # A function deleted since (``Metrics.forget``): not a new series.
            counted = metrics.known(function)
            if counted is not None:
                counted.add_tally(*counts)

    def _count(self, records: list[Record]) -> None:
        metrics = self.metrics
        assert metrics is not None
        if _tally is not None:
            try:
                tallies = _tally(records, DURATION_BUCKETS)
            except TypeError:
                pass  # a record of a shape C does not take: counted in Python
            else:
                for function, *counts in tallies:
                    # A function deleted since (``Metrics.forget``): not a new series.
                    counted = metrics.known(function)
                    if counted is not None:
                        counted.add_tally(*counts)
                return
        functions = _distinct_functions(records)
        if len(functions) == 1:
            function = functions.pop()
            # A function deleted since (``Metrics.forget``) is not counted into a new series.
            counted = None if function is None else metrics.known(function)
            if counted is not None:
                counted.answered(records)
            return
        by_function: dict[str, list[Record]] = {}
        for record in records:
            function = record.endpoint[0]
            if function is not None:
                by_function.setdefault(function, []).append(record)
        for function, chosen in by_function.items():
            counted = metrics.known(function)
            if counted is not None:
                counted.answered(chosen)

    def _take(self) -> list[Record]:
        """The pending records, folded and counted, for writing; a new list gathers the
        next."""
        self._fold()
        self._tally()
        records, self._pending = self._pending, []
        self._folded = 0
        self._tallied = 0
        return records

    # -- reading ----------------------------------------------------------------------------

    def recent(self, function: str, limit: int = RECENT) -> list[dict[str, Any]]:
        """The function's last ``limit`` requests (kept in memory, at most ``RECENT``), oldest
        first."""
        if self._journal is not None:
            return [json.loads(line) for line in self._journal.recent(function, limit)]
        self._fold()
        records = self._recent.get(function)
        if not records or limit <= 0:
            return []
        chosen = list(records)[-limit:]
        offset = time.time() - time.monotonic()
        return [self.as_dict(record, offset) for record in chosen]

    def recent_all(self, limit: int = RECENT) -> list[dict[str, Any]]:
        """Every function's last requests, oldest first across functions, at most ``limit``."""
        journal = self._journal
        if journal is not None:
            if limit <= 0:
                return []
            # The last ``limit`` across functions are among each one's last ``limit``.
            lines = [
                json.loads(line)
                for function in journal.functions()
                for line in journal.recent(function, min(limit, self.keep))
            ]
            lines.sort(key=_TIME)  # ISO 8601 in UTC, to the millisecond: as their times
            return lines[-limit:]
        self._fold()
        merged: list[Record] = []
        for records in self._recent.values():
            merged.extend(records)
        merged.sort(key=_STARTED)
        offset = time.time() - time.monotonic()
        return [self.as_dict(record, offset) for record in merged[-limit:]] if limit > 0 else []

    def forget(self, function: str) -> None:
        """The function was deleted: its requests are no longer kept."""
        if self._journal is not None:
            self._journal.forget(function)
            return
        self._fold()
        self._recent.pop(function, None)

    # -- formatting -----------------------------------------------------------------------

    def as_dict(self, record: Record | RecordFields, offset: float) -> dict[str, Any]:
        """A record's fields by name; ``offset`` turns its monotonic time into wall time."""
        started, endpoint, status, size, duration, queue, instance, cold, invocation, trace = (
            _as_fields(record)
        )
        function, route, method, path, client = endpoint
        return {
            "time": _iso(started + offset),
            "function": function,
            "route": route,
            "method": method,
            "path": path,
            "status": status,
            "bytes": size,
            "duration_ms": round(duration * 1000, 3),
            "queue_ms": None if queue is None else round(queue * 1000, 3),
            "instance": instance,
            "cold": cold,
            "invocation_id": self._invocation(invocation),
            "trace_id": _trace(trace),
            "client": client,
        }

    def format_lines(self, records: Iterable[Record | RecordFields], offset: float) -> str:
        """Records as log lines (each ending in a newline), in this log's format.

        One loop of local variables and f-strings per record: no dict, no ``json.dumps``,
        names and paths escaped once each (``_quote``), the date and time to the second
        spelt once per second. The writer thread shares the router's process (its CPU and its
        GIL): ``json.dumps`` of ``as_dict`` cost ~18 µs a record, this ~1.5 µs (timeit, on a
        machine where the router's own work is ~130 µs a request); the fields a record shares
        with the others to its endpoint, spelt once, ~10 % less."""
        text = self.format == "text"
        invocation_prefix = self.invocation_prefix
        quoted = self._quoted
        spelt = self._spelt
        if len(quoted) > _MAX_QUOTED or len(spelt) > _MAX_QUOTED:
            quoted.clear()  # distinct paths without end (path params): start over
            spelt.clear()
        lines: list[str] = []
        append = lines.append
        second = -1
        prefix = ""
        # The last record's endpoint, status and size, and what they share spelt: records of a
        # chunk to one endpoint share one tuple (marshal's references), checked by identity.
        last_endpoint: Endpoint | None = None
        last_status, last_size = 0, None
        shared = client_quoted = ""
        for (
            started,
            endpoint,
            status,
            size,
            duration,
            queue,
            instance,
            cold,
            invocation,
            trace,
        ) in map(_as_fields, records):
            wall = started + offset
            whole = int(wall)
            if whole != second:
                second = whole
                prefix = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            if isinstance(trace, bytes):
                trace = trace.decode()
            if text:
                function, route, method, path, client = endpoint
                append(
                    f"{prefix}.{int((wall - whole) * 1000):03d}Z {client or '-'} {method}"
                    f" {_safe(path)} {status} {'-' if size is None else size}"
                    f" {duration * 1000:.3f}ms fn={function or '-'} route={route or '-'}"
                    f" queue={'-' if queue is None else f'{queue * 1000:.3f}ms'}"
                    f" instance={instance or '-'} cold={'yes' if cold else 'no'}"
                    f" invocation={self._invocation(invocation) or '-'} trace={trace or '-'}\n"
                )
                continue
            # What most requests to an endpoint share (function, route, method, path, status,
            # size; the client, quoted) is spelt once per batch writer, then looked up (not
            # even that while records repeat the last one's); the rest in one f-string of
            # under 30 parts (CPython builds a longer one with a call to str.join). A name not
            # yet escaped raises KeyError (a plain dict: subscripting a subclass with
            # __missing__ is not specialised), then is escaped once.
            if endpoint is not last_endpoint or status != last_status or size != last_size:
                last_endpoint, last_status, last_size = endpoint, status, size
                key = (endpoint, status, size)
                spelt_key = spelt.get(key)
                if spelt_key is None:
                    function, route, method, path, client = endpoint
                    for name in (function, route, method, path, client):
                        if name not in quoted:
                            _quote(quoted, name)
                    spelt_key = spelt[key] = (
                        f'"function":{quoted[function]},"route":{quoted[route]},'
                        f'"method":{quoted[method]},"path":{quoted[path]},"status":{status},'
                        f'"bytes":{"null" if size is None else size},',
                        quoted[client],
                    )
                shared, client_quoted = spelt_key
            while True:
                try:
                    # The usual record (a direct call: a counted invocation id, a trace id)
                    # through one %-template: its fields are converted in one pass, where an
                    # f-string parses each field's format spec anew (~15 % less a record,
                    # timeit); the milliseconds from a table.
                    append(
                        (
                            _JSON_LINE
                            % (
                                prefix,
                                _MILLIS[int((wall - whole) * 1000)],
                                shared,
                                duration * 1000,
                                queue * 1000,
                                quoted[instance],
                                "true" if cold else "false",
                                invocation_prefix,
                                invocation,
                                trace,
                                client_quoted,
                            )
                            if queue is not None
                            else _JSON_LINE_NO_QUEUE
                            % (
                                prefix,
                                _MILLIS[int((wall - whole) * 1000)],
                                shared,
                                duration * 1000,
                                quoted[instance],
                                "true" if cold else "false",
                                invocation_prefix,
                                invocation,
                                trace,
                                client_quoted,
                            )
                        )
                        if isinstance(invocation, int) and trace is not None
                        else f'{{"time":"{prefix}.{int((wall - whole) * 1000):03d}Z",{shared}'
                        f'"duration_ms":{duration * 1000:.3f},'
                        f'"queue_ms":{"null" if queue is None else f"{queue * 1000:.3f}"},'
                        f'"instance":{quoted[instance]},"cold":{"true" if cold else "false"},'
                        f'"invocation_id":{quoted[self._invocation(invocation)]},'
                        f'"trace_id":{quoted[trace]},"client":{client_quoted}}}\n'
                    )
                    break
                except KeyError as missing:
                    _quote(quoted, missing.args[0])
        return "".join(lines)

    def _invocation(self, invocation: int | str | None) -> str | None:
        if isinstance(invocation, int):
            return f"{self.invocation_prefix}{invocation:08x}"
        return invocation

    # -- writing ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer process. Where the journal formats the lines (json, in C), it only
        appends them: a batch goes down a pipe in one write, and the router's process never
        writes the file, nor shares its GIL with a thread that does (a writer thread had to
        take it several times a batch, each time a hand-off the router waited on, ~10 more
        voluntary context switches a batch, ~24 batches a second under wrk). Else batches are
        formatted there, in Python: formatting a record in Python costs ~21k instructions, a
        fifth of what the router spends on a request (callgrind); marshalling it, a fraction of
        that. Without a writer process (``start`` not called, or lines formatted in process
        without the journal), a thread of the log's own writes."""
        if self.path is None or self._process is not None:
            return
        if self.in_process and self._journal is None:
            return
        if self._packed:  # lines packed before there was a process (records added early)
            self._hand(*self._take_packed())
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fissile.observability.access",
            str(self.path),
            self.format,
            self.invocation_prefix,
            str(self.max_bytes),
            str(self.backups),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            # A session, hence a scheduler autogroup, of its own (_serve_writer).
            start_new_session=True,
        )
        assert self._process.stdin is not None
        _grow_pipe(self._process.stdin.transport)

    def _pack(self) -> None:
        """The pending records, as lines for the writer thread, or marshalled and framed for
        the writer process."""
        records = self._take()
        if records:
            if self._process is not None:
                payload = marshal.dumps((0, list(map(_FIELDS, records))))
                self._packed.append(_FRAME.pack(len(payload)) + payload)
            else:
                self._packed.append(self._lines(records, 0))
            self._packed_count += len(records)

    def _send(self) -> None:
        """The chunks gathered, to the writer process; dropped and counted when it is
        behind."""
        process = self._process
        assert process is not None and process.stdin is not None
        self._pack()
        packed, count = self._packed, self._packed_count
        self._packed, self._packed_count = [], 0
        stdin = process.stdin
        if stdin.is_closing() or stdin.transport.get_write_buffer_size() > MAX_PIPE_BUFFER:
            self._dropped += count
            self._unreported += count
            return
        dropped, self._unreported = self._unreported, 0
        if dropped:
            note = marshal.dumps((dropped, []))
            packed.insert(0, _FRAME.pack(len(note)) + note)
        stdin.writelines(packed)

    def _flush(self) -> None:
        self._send_or_write()
        self._rewatch()

    def _send_or_write(self) -> None:
        self._timer = None
        if self._process is not None:
            if self._journal is not None:
                if not self._closed:
                    self._send_lines()
            elif (self._pending or self._packed) and not self._closed:
                self._send()
            return
        self._count_lost()
        journal = self._journal
        if journal is not None:
            gathered = bool(journal.pending or journal.dropped or self._odd or self._unreported)
            if self._handed != self._finished or not gathered or self._closed:
                if gathered and not self._closed:
                    loop = asyncio.get_running_loop()
                    self._timer = loop.call_later(self.interval, self._flush)
                return
            self._hand(*self._take_journal())
            return
        waiting = self._pending or self._packed
        if self._handed != self._finished or not waiting or self._closed:
            if waiting and not self._closed:
                # The writer is behind: try again later (records keep gathering, bounded).
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self.interval, self._flush)
            return
        # Formatted here (chunk by chunk as they filled), written on the thread: formatting
        # holds the GIL wherever it runs, and on the thread it made the loop wait for the GIL
        # besides; a write may block on a slow disk, and releases the GIL while it does.
        self._pack()
        data, count = self._take_packed()
        self._hand(data, count)

    def _hand(self, data: list[bytes], count: int) -> None:
        """A batch of lines to the writer thread, started on the first. A queue and a thread
        of the log's own, not an executor: a put and a get a batch, where ``run_in_executor``
        made two futures, chained them and called back into the loop through its self-pipe
        (not measured apart from the other changes that came with it)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._write_batches, name="fissile-access-log", daemon=True
            )
            self._thread.start()
        self._handed += count
        self._batches.put((data, count))

    def _write_batches(self) -> None:
        """The writer thread: batches in the order handed, until told to stop (None)."""
        while True:
            batch = self._batches.get()
            if batch is None:
                return
            data, count = batch
            try:
                lost = self.write_lines(data, count)
            except Exception:
                logger.exception("access log: cannot write %s", self.path)
                lost = count
            self._lost += lost
            self._finished += count

    def _count_lost(self) -> None:
        """Records the writer thread lost since last seen, into ``dropped`` (and said)."""
        lost = self._lost - self._lost_seen
        if lost:
            self._lost_seen += lost
            self._dropped += lost
            self._unreported += lost

    def _stop_writing(self, timeout: float) -> None:
        """Wait for the writer thread to write what it was handed, and end it."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._batches.put(None)
            thread.join(timeout)
        self._count_lost()

    def _send_lines(self) -> None:
        """The journal's lines, to the writer process to append; dropped and counted when it
        is behind."""
        process = self._process
        assert process is not None and process.stdin is not None
        stdin = process.stdin
        if stdin.is_closing() or process.returncode is not None:
            # The writer process is gone (killed, or it failed): the log's own thread
            # appends from now on, the lines not sent since among what it writes.
            logger.warning("access log: the writer process ended; writing from a thread")
            stdin.close()  # its pipe let go (the process's transport then ends with it)
            self._process = None
            self._send_or_write()
            return
        behind = stdin.transport.get_write_buffer_size() > MAX_PIPE_BUFFER
        chunks, count = self._take_journal(note=not behind)
        if behind:
            self._dropped += count
            self._unreported += count
            return
        if chunks:
            size = sum(map(len, chunks))
            stdin.writelines([_LINES_FRAME.pack(_LINES | size, count), *chunks])

    def _take_journal(self, note: bool = True) -> tuple[list[bytes], int]:
        """The journal's lines (counted first), those spelt in Python, and (``note``) the note
        of records dropped before them, to write."""
        journal = self._journal
        assert journal is not None
        if self.metrics is not None and threading.get_ident() == self._counting_thread:
            self._tally_journal()
        lines, count, dropped = journal.take()
        journal.offset = time.time() - time.monotonic()  # the wall clock may have been set
        self._dropped += dropped
        self._unreported += dropped
        chunks = [lines] if lines else []
        if self._odd:
            chunks.append("".join(self._odd).encode("utf-8", "replace"))
            count += self._odd_count
            self._odd, self._odd_count = [], 0
        if note:
            dropped, self._unreported = self._unreported, 0
            if dropped:
                chunks.append(self._note(dropped).encode())
        return chunks, count

    def _take_packed(self) -> tuple[list[bytes], int]:
        """The lines packed, and the note of records dropped before them, to write."""
        packed, count = self._packed, self._packed_count
        self._packed, self._packed_count = [], 0
        dropped, self._unreported = self._unreported, 0
        if dropped:
            packed.append(self._note(dropped).encode())
        return packed, count

    def _lines(self, records: Sequence[Record | RecordFields], dropped: int) -> bytes:
        """Records as lines to append (then the note of ``dropped`` records lost): in C
        where it can (json), else in Python."""
        offset = time.time() - time.monotonic()
        note = self._note(dropped).encode() if dropped else b""
        if self._native and _json_lines is not None:
            try:
                return _json_lines(records, offset, self.invocation_prefix) + note
            except (TypeError, ValueError):
                # A record of a shape C does not take (not one the router made): Python
                # formats it as it can.
                pass
        return self.format_lines(records, offset).encode("utf-8", "replace") + note

    def write_lines(self, data: bytes | list[bytes], count: int) -> int:
        """Append ``data`` (``count`` records' lines, or chunks of them) in one ``write()``
        (``writev()``: a batch's chunks are not copied together first), rotating past the
        limit, on the writer thread. Returns the records lost to a write error (counted on the
        loop, by ``_count_lost``)."""
        chunks = [data] if isinstance(data, bytes) else data
        if len(chunks) > _IOV_MAX:
            chunks = [b"".join(chunks)]
        size = sum(map(len, chunks))
        with self._lock:
            if self.path is None:
                return 0
            try:
                if self._file is None:
                    self._open()
                assert self._file is not None
                if self._size and self._size + size > self.max_bytes:
                    self._rotate()
                written = os.writev(self._file, chunks)
                if written < size:
                    # Short (a disk filling up as it wrote): the rest, or the error.
                    rest = memoryview(b"".join(chunks))[written:]
                    while rest:
                        rest = rest[os.write(self._file, rest) :]
                self._size += size
            except OSError as exc:
                # A full disk: the records are lost, counted, and said once space returns.
                self._close_file()
                logger.warning("access log: cannot write %s: %s", self.path, exc)
                return count
        return 0

    def _note(self, dropped: int) -> str:
        note = {"time": _iso(time.time()), "dropped": dropped}
        if self.format == "text":
            return f"{note['time']} access log: {dropped} records dropped (writing fell behind)\n"
        return json.dumps(note, separators=(",", ":")) + "\n"

    def _open(self) -> None:
        assert self.path is not None
        self._file = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._size = os.fstat(self._file).st_size

    def _rotate(self) -> None:
        """access.log becomes access.log.1, access.log.1 access.log.2... the oldest past
        ``backups`` is overwritten (none kept: the log starts over)."""
        path = self.path
        assert path is not None
        self._close_file()
        if self.backups == 0:
            path.unlink(missing_ok=True)
        else:
            for n in range(self.backups - 1, 0, -1):
                older = path.with_name(f"{path.name}.{n}")
                if older.exists():
                    os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
            os.replace(path, path.with_name(path.name + ".1"))
        self._open()

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.close(self._file)
            self._file = None

    async def aclose(self, timeout: float = 5.0) -> None:
        """Send or write what is pending, and wait for the writer process to finish (or the
        writer thread's batch: what is pending is written after it)."""
        process = self._process
        if process is None:
            if self._thread is not None:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self._stop_writing, timeout)
            self.close()
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._journal is not None:
            self._send_lines()
        elif self._pending or self._packed or self._unreported:
            self._send()
        self._closed = True
        self._rewatch()
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()

    def close(self) -> None:
        """Write what is pending (on the caller's thread, after what the writer thread was
        handed) and close the file."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._closed = True
        self._rewatch()
        self._stop_writing(5.0)
        if self._journal is not None:
            chunks, count = self._take_journal()
            if chunks:
                self._dropped += self.write_lines(chunks, count)
            with self._lock:
                self._close_file()
            return
        records = self._take()
        if records or self._packed or self._unreported:
            chunks = self._packed
            count = self._packed_count + len(records)
            self._packed, self._packed_count = [], 0
            dropped, self._unreported = self._unreported, 0
            chunks.append(self._lines(records, dropped))
            self._dropped += self.write_lines(chunks, count)
        with self._lock:
            self._close_file()


def _serve_writer(argv: list[str]) -> None:
    """The writer process: batches of records from stdin, formatted and appended to the log,
    until stdin closes (the platform stopped, or died)."""
    path, format, prefix, max_bytes, backups = argv
    with contextlib.suppress(OSError):
        os.nice(WRITER_NICE)
    # With autogroups (on by default in Linux), niceness only orders the tasks of one
    # session: in the platform's, the writer was paid out of the router's share of the CPU.
    # In a session of its own, its group's niceness ranks it below the other sessions.
    with contextlib.suppress(OSError):
        Path("/proc/self/autogroup").write_text(f"{WRITER_NICE}\n")
    log = AccessLog(
        Path(path),
        format,  # type: ignore[arg-type]
        invocation_prefix=prefix,
        max_bytes=int(max_bytes),
        backups=int(backups),
    )
    stdin = sys.stdin.buffer
    lost = 0  # records this process failed to write, said with the next batch that fits
    while True:
        head = stdin.read(_FRAME.size)
        if len(head) < _FRAME.size:
            break
        (size,) = _FRAME.unpack(head)
        if size & _LINES:
            # Lines the journal formatted (the note of lines dropped among them): appended as
            # they are, after a note of what this process failed to write before.
            counted = stdin.read(_LINES_FRAME.size - _FRAME.size)
            data = stdin.read(size & ~_LINES)
            if len(counted) < _LINES_FRAME.size - _FRAME.size or len(data) < size & ~_LINES:
                break
            (count,) = struct.unpack(">I", counted)
            chunks = [log._note(lost).encode(), data] if lost else [data]
            failed = log.write_lines(chunks, count)
            lost = failed + (lost if failed else 0)
            continue
        payload = stdin.read(size)
        dropped, records = marshal.loads(payload)
        failed = log.write_lines(log._lines(records, dropped + lost), len(records))
        lost = failed + (dropped + lost if failed else 0)
    with log._lock:
        log._close_file()


def _grow_pipe(transport: Any) -> None:
    """The writer process's pipe's buffer to ``PIPE_SIZE`` where the system allows it (else
    as it is: a batch then takes a few writes as the writer reads). asyncio's subprocess
    stdin is a pipe; uvloop's a Unix socket pair, whose buffer is the sending end's (capped
    by net.core.wmem_max, 208 KiB by default, doubled by the kernel)."""
    pipe = transport.get_extra_info("pipe")
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if pipe is not None and setpipe is not None:
        with contextlib.suppress(OSError, ValueError):
            fcntl.fcntl(pipe.fileno(), setpipe, PIPE_SIZE)
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PIPE_SIZE)


def text_line(fields: dict[str, Any]) -> str:
    """One record as a text line: the request first, then what the router learnt serving it."""
    queue = fields["queue_ms"]
    size = fields["bytes"]
    parts = [
        fields["time"],
        fields["client"] or "-",
        fields["method"],
        fields["path"],
        str(fields["status"]),
        "-" if size is None else str(size),
        f"{fields['duration_ms']:.3f}ms",
        f"fn={fields['function'] or '-'}",
        f"route={fields['route'] or '-'}",
        f"queue={'-' if queue is None else f'{queue:.3f}ms'}",
        f"instance={fields['instance'] or '-'}",
        f"cold={'yes' if fields['cold'] else 'no'}",
        f"invocation={fields['invocation_id'] or '-'}",
        f"trace={fields['trace_id'] or '-'}",
    ]
    if "node" in fields:  # fn logs --requests in a cluster
        parts.append(f"node={fields['node']}")
    return " ".join(parts) + "\n"


_QUOTE = '"'
# format_lines's usual JSON line after the fields shared per endpoint, with and without a
# queue wait; and the milliseconds of a second, spelt.
_JSON_LINE = (
    '{"time":"%s.%sZ",%s"duration_ms":%.3f,"queue_ms":%.3f,"instance":%s,"cold":%s,'
    '"invocation_id":"%s%08x","trace_id":"%s","client":%s}\n'
)
_JSON_LINE_NO_QUEUE = (
    '{"time":"%s.%sZ",%s"duration_ms":%.3f,"queue_ms":null,"instance":%s,"cold":%s,'
    '"invocation_id":"%s%08x","trace_id":"%s","client":%s}\n'
)
_MILLIS = [f"{millis:03d}" for millis in range(1000)]
_ENDPOINT = attrgetter("endpoint")
_FIRST = itemgetter(0)  # an endpoint's function
_STARTED = attrgetter("started")
_TIME = itemgetter("time")
_MAX_QUOTED = 4096


def _as_fields(record: Record | RecordFields) -> RecordFields:
    return record if isinstance(record, tuple) else record.fields()


def _distinct_functions(records: Sequence[Record]) -> set[str | None]:
    """The functions the records are to; C compares each with the last (a few dozen
    instructions a record), where two C-level maps and a set cost ~350 (callgrind)."""
    if _functions is not None:
        return set(_functions(records))
    return set(map(_FIRST, map(_ENDPOINT, records)))


def _quote(quoted: dict[str | None, str], key: str | None) -> None:
    """Escape ``key`` as a JSON string (None as null) once: the same functions, routes,
    instances, clients and (mostly) paths come back in every batch."""
    quoted[key] = "null" if key is None else encode_basestring_ascii(key)


def _safe(path: str) -> str:
    """A path for a text line: one field, whatever the client sent."""
    if path.isprintable() and " " not in path:
        return path
    return encode_basestring_ascii(path)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _trace(trace: bytes | str | None) -> str | None:
    return trace.decode() if isinstance(trace, bytes) else trace


if __name__ == "__main__":
    _serve_writer(sys.argv[1:])
