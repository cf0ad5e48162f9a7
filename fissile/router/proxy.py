"""Forwarding one request to an instance of a function, with its timeout and failure answers."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from bisect import bisect_left
from collections.abc import Callable

from fissile.executor import Executor, ExecutorError
from fissile.executor.connection import InstanceConnection, InstanceGone, InstanceResponse
from fissile.executor.errors import CrashLoop
from fissile.executor.instance import Instance
from fissile.executor.pools import FunctionPool
from fissile.observability import tracecontext, tracing
from fissile.observability.access import Record
from fissile.observability.metrics import DURATION_BUCKETS
from fissile.observability.tracing import _state as _tracing_state
from fissile.router.relay import EXIT_REPORT_GRACE, BodyRelay, recycle_oversized

logger = logging.getLogger("fissile.router")

# Retry-After on a 429 (queue full) and a 503 (queue timeout), in seconds: a queue turns over
# in about a function's run time, not known here; a second is what clients expect as a minimum.
RETRY_AFTER = b"1"


class Answer:
    """A response for the client that did not come from the function."""

    __slots__ = ("body", "code", "headers", "message", "status")
    stream = None  # as an ``InstanceResponse`` that came whole

    def __init__(
        self, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self.headers = [(b"content-type", b"application/json"), *(headers or [])]


class Trip(Record):
    """How one request was served, as forwarding learns it: when it arrived, how long it
    waited for an instance, which one, and whether that instance was made for it. Counted into
    the function's metrics when it ends (``_count``). It is the request's access-log record
    too: the router sets its endpoint, status and size when it answers (``RouterProtocol.
    _answered``) and adds it to the log as it is.

    A request is a cold start when it waited in the queue and the instance that served it
    became ready after the request arrived (an instance ready before, prewarmed or freed by
    another request, is warm). Times are ``time.monotonic()``: uvloop's ``loop.time()`` has a
    millisecond's resolution, more than a warm call takes.

    ``logged``: the access log's record of the request counts it into the function's metrics
    (``AccessLog.count_into``, in bulk), so ``_count`` only times it."""

    __slots__ = ("flags", "logged", "parent", "span")

    def __init__(self, started: float, logged: bool = False) -> None:
        # Record.__init__ is not called: the endpoint, status and size are set when the
        # request is answered, and only a logged trip needs them.
        self.started = started
        self.logged = logged
        self.duration = 0.0  # to the response's head, once it came
        self.waited = None  # seconds in the queue; None: refused before it
        self.instance = None
        self.cold = False
        # Set by ``encode_forward`` for the access log: the ids the instance was sent.
        self.invocation = None
        self.trace = None
        # The router's span of the hop (for --otlp-endpoint): its id, the client's span it
        # continues (None: the router started the trace) and the trace's flags.
        self.span = 0
        self.parent: str | None = None
        self.flags = tracecontext.SAMPLED

    def served(self, instance: Instance, queued: bool) -> None:
        """``instance`` takes the request, after waiting in the queue or not."""
        self.instance = instance.id
        if queued:
            now = time.monotonic()
            self.waited = now - self.started
            self.cold = instance.ready_at > self.started
        else:
            self.waited = 0.0


def _count(executor: Executor, pool: FunctionPool, trip: Trip, status: int) -> None:
    """The request ended with ``status`` (its response's head): into the function's metrics."""
    trip.duration = duration = time.monotonic() - trip.started
    if trip.span and _tracing_state.active is not None:  # tracing.enabled(), without a call
        _record_hop(pool, trip, status)
    if trip.logged or not executor.metrics.enabled:
        return
    # FunctionMetrics.request and Histogram.observe, inlined: two calls fewer per request
    # (5.8k instructions to 5.2k per request, callgrind).
    metrics = pool.metrics
    requests = metrics.requests
    requests[status] = requests.get(status, 0) + 1
    histogram = metrics.duration
    histogram.counts[bisect_left(DURATION_BUCKETS, duration)] += 1
    histogram.sum += duration
    histogram.count += 1
    waited = trip.waited
    if waited is None:
        return
    histogram = metrics.queue_wait
    if waited:
        histogram.counts[bisect_left(DURATION_BUCKETS, waited)] += 1
        histogram.sum += waited
        if trip.cold:
            metrics.cold_starts += 1
    else:
        histogram.counts[0] += 1  # most warm requests: the first bucket, no bisect
    histogram.count += 1


def _record_hop(pool: FunctionPool, trip: Trip, status: int) -> None:
    """The router's span of a request it forwarded (to its response's head), exported with
    ``--otlp-endpoint``: the parent of the function's own hops (invoke, publish, async)."""
    trace = trip.trace
    if trace is None:
        return
    end = time.time_ns()
    attributes: dict[str, str | bool | int | float] = {
        "fissile.function": pool.name,
        "http.response.status_code": status,
        "fissile.cold": trip.cold,
    }
    if trip.instance is not None:
        attributes["fissile.instance"] = trip.instance
    tracing.record_span(
        f"route {pool.name}",
        trace.decode() if isinstance(trace, bytes) else trace,
        trip.parent,
        f"{trip.span:016x}",
        end - int(trip.duration * 1e9),
        end,
        attributes,
        flags=trip.flags,
        error=f"status {status}" if status >= 500 else None,
        kind="server",
    )


def forward_soon(
    executor: Executor,
    pool: FunctionPool,
    request: bytes,
    done: Callable[[InstanceResponse | Answer], None],
    trip: Trip | None = None,
) -> bool:
    """``forward`` on callbacks, without a coroutine, a task or a timeout context: ``done``
    gets the outcome. False, with nothing done, when only ``forward`` can serve the request
    (no kept-alive connection to the free instance, a crash-looping function, a full queue).

    The router's hot path: a task and ``asyncio.timeout`` per request were ~13 % of its CPU
    under wrk (py-spy).
    """
    instance = pool.pick()
    if instance is not None:
        conn = instance.idle_connection()
        if conn is None:
            return False
        # pool.take(instance), inlined (two calls fewer per request).
        instance.inflight += 1
        instance.served = True
        pool.inflight += 1
        pool.scaler.observe(time.monotonic(), pool.inflight + len(pool.waiters))
        if trip is None:
            trip = Trip(time.monotonic())
        # trip.served(instance, False), without the call.
        trip.instance = instance.id
        trip.waited = 0.0
        _Exchange(executor, pool, request, done, trip).send(instance, conn)
        return True
    if pool.queue_full():
        return False  # ``forward`` refuses it (and counts the refusal once)
    clock = pool.queue_clock
    if clock is None:
        clock = pool.queue_clock = _QueueClock(pool, asyncio.get_running_loop())
    if trip is None:
        trip = Trip(time.monotonic())
    exchange = _Exchange(executor, pool, request, done, trip)
    queued = _Queued(exchange, clock.loop.time() + pool.queue_timeout)
    try:
        pool.enqueue_waiter(queued)
    except ExecutorError:
        return False
    exchange.waiter = queued
    clock.arm(queued.deadline)
    return True


class _Queued:
    """``forward_soon``'s request in its function's queue: the part of a future the pool uses
    (``pools.Waiter``), handing the instance to its exchange at once rather than on the loop's
    next turn. Under wrk most warm requests wait here (32 connections, 10 instances of
    concurrency 1): a future, its done callback and a ``call_later`` per queued request were
    ~12 % of the router's CPU (py-spy), and dropping them took the router's Python time per
    request from 15.1 to 11.2 µs (in process, fake sockets, 32 clients on 10 instances). The
    queue timeout is one timer per function (``_QueueClock``)."""

    __slots__ = ("deadline", "error", "exchange", "instance")

    def __init__(self, exchange: _Exchange, deadline: float) -> None:
        self.exchange: _Exchange | None = exchange  # None once resolved
        self.deadline = deadline
        self.instance: Instance | None = None
        self.error: BaseException | None = None

    def done(self) -> bool:
        return self.exchange is None

    def cancelled(self) -> bool:
        return False

    def exception(self) -> BaseException | None:
        return self.error

    def result(self) -> Instance:
        assert self.instance is not None
        return self.instance

    def set_result(self, instance: Instance) -> None:
        exchange, self.exchange = self.exchange, None
        self.instance = instance
        if exchange is not None:
            exchange._ready(instance)

    def set_exception(self, exc: BaseException) -> None:
        # On the loop's next turn, as a future's callback: the pool fails its whole queue in
        # one loop, which a request enqueued from inside it must not join.
        exchange, self.exchange = self.exchange, None
        self.error = exc
        if exchange is not None:
            asyncio.get_running_loop().call_soon(exchange._refused, exc)


class _QueueClock:
    """The queue timeout of one function's queued ``forward_soon`` requests: one timer, at the
    earliest deadline of those waiting, moved only when it would fire late (a shorter queue
    timeout) and, when it fires, re-armed for the next; as ``_Clock``, never early."""

    __slots__ = ("handle", "loop", "pool")

    def __init__(self, pool: FunctionPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.handle: asyncio.TimerHandle | None = None

    def arm(self, deadline: float) -> None:
        handle = self.handle
        if handle is not None:
            if handle.when() <= deadline:
                return
            handle.cancel()
        self.handle = self.loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self.handle = None
        now = self.loop.time()
        due: list[_Queued] = []
        earliest = math.inf
        for waiter in self.pool.waiters:
            if isinstance(waiter, _Queued) and waiter.exchange is not None:
                if waiter.deadline <= now:
                    due.append(waiter)
                elif waiter.deadline < earliest:
                    earliest = waiter.deadline
        for waiter in due:
            exchange = waiter.exchange
            if exchange is not None:  # not served meanwhile by another's answer
                exchange._expired()
        if earliest < math.inf:
            self.arm(earliest)


class _Clock:
    """The function's timeout for the requests one kept-alive connection carries in turn.

    Its timer stays armed across requests and is moved only when it fires early (a later
    request's deadline) or would fire late (a shorter timeout): a ``call_later`` and its
    ``cancel`` per request cost ~1.9 µs under uvloop, a few % of the router's CPU per warm
    request. It still fires at the current request's exact deadline."""

    __slots__ = ("deadline", "exchange", "handle", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.deadline = 0.0
        self.exchange: _Exchange | None = None
        self.handle: asyncio.TimerHandle | None = None

    def start(self, exchange: _Exchange, timeout: float) -> None:
        self.exchange = exchange
        self.deadline = deadline = self.loop.time() + timeout
        handle = self.handle
        if handle is not None:
            if handle.when() <= deadline:
                return
            handle.cancel()
        self.handle = self.loop.call_at(deadline, self._fire)

    def idle_close(self) -> None:
        """The connection is gone: an armed timer with no request left to time is dropped
        now rather than kept in the loop until its (possibly hour-long) deadline."""
        if self.exchange is None and self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _fire(self) -> None:
        self.handle = None
        exchange = self.exchange
        if exchange is None:
            return  # idle: armed again by the next request
        if self.loop.time() < self.deadline:
            self.handle = self.loop.call_at(self.deadline, self._fire)
            return
        self.exchange = None
        exchange._expired()


class _Exchange:
    """One request on ``forward_soon``'s path: waiting for an instance (bounded by the queue
    timeout), then the response (bounded by the function's timeout, from when it has its
    instance), as ``forward``'s."""

    __slots__ = (
        "conn",
        "done",
        "executor",
        "instance",
        "pool",
        "request",
        "timer",
        "trip",
        "waiter",
    )

    def __init__(
        self,
        executor: Executor,
        pool: FunctionPool,
        request: bytes,
        done: Callable[[InstanceResponse | Answer], None],
        trip: Trip,
    ) -> None:
        self.executor = executor
        self.trip = trip
        self.pool = pool
        self.request = request
        self.done: Callable[[InstanceResponse | Answer], None] | None = done
        self.instance: Instance | None = None
        self.conn: InstanceConnection | None = None
        self.waiter: _Queued | None = None
        self.timer: asyncio.TimerHandle | None = None

    def _ready(self, instance: Instance) -> None:
        """The queue handed this request ``instance`` (already counted as taken)."""
        self.waiter = None
        self.trip.served(instance, True)
        conn = instance.idle_connection()
        if conn is None:
            self._start_clock()
            self.executor.spawn(self._connect(instance))
        else:
            self.send(instance, conn)

    def _refused(self, exc: BaseException) -> None:
        self.waiter = None
        if self.done is not None:
            self._finish(refusal(exc))

    def _start_clock(self) -> None:
        """The function's timeout counts from here: time in the queue is not its own."""
        if self.timer is not None:
            self.timer.cancel()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.pool.timeout, self._expired)

    async def _connect(self, instance: Instance) -> None:
        try:
            conn = await instance.connection()
        except InstanceGone as exc:
            self.instance = instance
            await self._died(str(exc))
            return
        if self.done is None:
            conn.close()  # timed out while connecting
            self.pool.release(instance)
            return
        self.send(instance, conn)

    def send(self, instance: Instance, conn: InstanceConnection) -> None:
        self.instance = instance
        self.conn = conn
        if self.timer is None:
            clock = conn.clock
            if clock is None:
                clock = conn.clock = _Clock(asyncio.get_running_loop())
            clock.start(self, self.pool.timeout)
        conn.send(self.request, self._answered)

    def _deadline(self) -> float:
        if self.timer is not None:
            return self.timer.when()
        assert self.conn is not None and self.conn.clock is not None
        return float(self.conn.clock.deadline)

    def _answered(self, outcome: InstanceResponse | Exception) -> None:
        if self.done is None:
            return  # timed out: answered, the instance killed and released
        instance, conn = self.instance, self.conn
        assert instance is not None and conn is not None
        if isinstance(outcome, Exception):
            conn.close()
            self.executor.spawn(self._died(str(outcome)))
            return
        response = outcome
        if response.stream is not None or len(response.body) > self.executor.max_response_body:
            deadline = self._deadline()  # the function's clock, started by send()
            self._finish(_streamed(self.executor, self.pool, instance, conn, response, deadline))
            return
        instance.keep(conn, response.keep_alive)
        pool = self.pool
        if response.status < 500:
            pool.failures = 0  # pool.succeeded(), without the call
        pool.release(instance)
        self._finish(response)

    async def _died(self, detail: str) -> None:
        instance = self.instance
        assert instance is not None
        try:
            answer = await _instance_died(self.executor, self.pool, instance, detail)
        finally:
            self.pool.release(instance)
        self._finish(answer)

    def _expired(self) -> None:
        if self.done is None:
            return
        if self.waiter is not None:
            self.pool.expired(self.waiter)
            self.waiter = None
            self.trip.waited = time.monotonic() - self.trip.started
            self._finish(queue_timed_out(self.pool, self.pool.queue_timeout))
            return
        timeout = self.pool.timeout
        sent = False
        if self.conn is not None and self.instance is not None:
            sent = True
            self.conn.close()
            self.pool.overran(self.instance, timeout)
            self.pool.release(self.instance)
        # Connecting (``_connect``) releases the instance when it sees the timeout.
        self._finish(_timed_out(self.pool, timeout, sent))

    def _finish(self, result: InstanceResponse | Answer) -> None:
        done, self.done = self.done, None
        if self.timer is not None:
            self.timer.cancel()
        conn = self.conn
        if conn is not None and conn.clock is not None and conn.clock.exchange is self:
            conn.clock.exchange = None
        if done is not None:
            _count(self.executor, self.pool, self.trip, result.status)
            done(result)


def _streamed(
    executor: Executor,
    pool: FunctionPool,
    instance: Instance,
    conn: InstanceConnection,
    response: InstanceResponse,
    deadline: float,
) -> InstanceResponse | Answer:
    """A response whose body is still coming (or too large): its ``stream`` becomes a
    ``BodyRelay``, which gives the instance back when the body ends. A body known to exceed
    ``--max-response-body`` before any of it went out is refused whole (502)."""
    limit = executor.max_response_body
    declared = len(response.body) if response.stream is None else response.length
    if declared is not None and declared > limit:
        recycle_oversized(executor, pool, instance, conn)
        pool.release(instance)
        message = f"the response of {pool.name} exceeds {limit} bytes (--max-response-body)"
        return Answer(502, "response_too_large", message)
    response.stream = BodyRelay(executor, pool, instance, conn, response, deadline)
    return response


def _timed_out(pool: FunctionPool, timeout: float, sent: bool) -> Answer:
    """504: the function did not answer (its instance was killed), or its instance could not
    be reached in time."""
    if sent:
        message = (
            f"function {pool.name} did not answer within {timeout:g}s; its instance was killed"
        )
    else:
        message = f"no instance of {pool.name} could be reached within {timeout:g}s"
    return Answer(504, "timeout", message)


def queue_timed_out(pool: FunctionPool, waited: float) -> Answer:
    """503: the request waited ``waited`` seconds for an instance with room, in vain. Nothing
    was killed; the client may retry."""
    if pool.instances:
        why = f"no instance of {pool.name} was free within {waited:g}s"
    else:  # its first instance still loading (a cold start slower than the queue timeout)
        why = f"no instance of {pool.name} became ready within {waited:g}s"
    return Answer(503, "queue_timeout", f"{why}; retry later", [(b"retry-after", RETRY_AFTER)])


def refusal(exc: BaseException) -> Answer:
    """The answer for an executor's refusal to serve (not found, crash loop, overloaded...)."""
    if isinstance(exc, CrashLoop):
        retry = str(max(1, math.ceil(exc.retry_after))).encode()
        return Answer(exc.status, exc.code, exc.message, [(b"retry-after", retry)])
    if isinstance(exc, ExecutorError):
        headers = [(b"retry-after", RETRY_AFTER)] if exc.status == 429 else None
        return Answer(exc.status, exc.code, exc.message, headers)
    return Answer(500, "internal_error", f"cannot start an instance: {exc}")


async def forward(
    executor: Executor,
    pool: FunctionPool,
    request: bytes,
    timeout: float | None = None,
    on_acquire: Callable[[Instance], None] | None = None,
    trip: Trip | None = None,
) -> InstanceResponse | Answer:
    """Wait for an instance with room (at most the queue timeout: then 503), then for its
    response (at most the function's timeout, counted from then: then 504 and the instance is
    killed). ``timeout``, a caller's remaining deadline, bounds both together.

    ``on_acquire`` learns which instance serves the request (to kill it on a cancel);
    ``trip``, how it was served (one is made when not given: the request is counted in the
    function's metrics either way)."""
    if trip is None:
        trip = Trip(time.monotonic())
    result = await _forward(executor, pool, request, timeout, on_acquire, trip)
    _count(executor, pool, trip, result.status)
    return result


async def _forward(
    executor: Executor,
    pool: FunctionPool,
    request: bytes,
    timeout: float | None,
    on_acquire: Callable[[Instance], None] | None,
    trip: Trip,
) -> InstanceResponse | Answer:
    loop = asyncio.get_running_loop()
    started = loop.time()
    instance = pool.take_ready()
    if instance is not None:
        trip.served(instance, False)
    else:
        try:
            waiter = pool.enqueue()
        except ExecutorError as exc:
            return refusal(exc)
        wait = pool.queue_timeout if timeout is None else min(pool.queue_timeout, timeout)
        try:
            async with asyncio.timeout(wait):
                instance = await waiter
        except TimeoutError:
            pool.expired(waiter)
            trip.waited = time.monotonic() - trip.started
            return queue_timed_out(pool, wait)
        except asyncio.CancelledError:
            pool.abandon(waiter)
            raise
        except ExecutorError as exc:
            return refusal(exc)
        trip.served(instance, True)
    run = pool.timeout
    if timeout is not None:
        run = max(min(run, timeout - (loop.time() - started)), 0.001)
    sent = False
    held: Instance | None = instance  # None once a streamed body's relay holds it
    try:
        async with asyncio.timeout(run) as scope:
            if on_acquire is not None:
                on_acquire(instance)
            conn = instance.idle_connection() or await instance.connection()
            sent = True
            try:
                response = await conn.request(request)
            except BaseException:
                conn.close()
                raise
            if response.stream is not None or len(response.body) > executor.max_response_body:
                held = None  # given back by the relay, or already
                return _streamed(executor, pool, instance, conn, response, scope.when() or 0.0)
            instance.keep(conn, response.keep_alive)
            if response.status < 500:
                pool.succeeded()
            return response
    except TimeoutError:
        if sent:
            pool.overran(instance, run)
        return _timed_out(pool, run, sent)
    except InstanceGone as exc:
        return await _instance_died(executor, pool, instance, str(exc))
    finally:
        if held is not None:
            pool.release(held)


async def _instance_died(
    executor: Executor, pool: FunctionPool, instance: Instance, detail: str
) -> Answer:
    try:
        await asyncio.wait_for(instance.exited.wait(), EXIT_REPORT_GRACE)
        reason = instance.exit_reason or "exited"
    except TimeoutError:
        # Alive but dropped the request: an instance in that state is not trusted again.
        reason = "closed the connection mid-response"
        executor.kill(instance, reason)
    return Answer(502, "instance_died", f"the instance of {pool.name} died: {reason}")
