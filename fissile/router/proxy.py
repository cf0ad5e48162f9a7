"""Forwarding one request to an instance of a function, with its timeout and failure answers."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable

from fissile.executor import Executor, ExecutorError
from fissile.executor.connection import InstanceConnection, InstanceGone, InstanceResponse
from fissile.executor.errors import CrashLoop
from fissile.executor.instance import Instance
from fissile.executor.pools import FunctionPool
from fissile.router.relay import EXIT_REPORT_GRACE, BodyRelay, recycle_oversized

logger = logging.getLogger("fissile.router")


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


def forward_soon(
    executor: Executor,
    pool: FunctionPool,
    request: bytes,
    done: Callable[[InstanceResponse | Answer], None],
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
        pool.take(instance)
        _Exchange(executor, pool, request, done).send(instance, conn)
        return True
    try:
        waiter = pool.enqueue()
    except ExecutorError:
        return False
    _Exchange(executor, pool, request, done).wait(waiter)
    return True


class _Exchange:
    """One request on ``forward_soon``'s path: waiting for an instance, the response, and the
    timeout over both (as ``forward``'s)."""

    __slots__ = ("conn", "done", "executor", "instance", "pool", "request", "timer", "waiter")

    def __init__(
        self,
        executor: Executor,
        pool: FunctionPool,
        request: bytes,
        done: Callable[[InstanceResponse | Answer], None],
    ) -> None:
        self.executor = executor
        self.pool = pool
        self.request = request
        self.done: Callable[[InstanceResponse | Answer], None] | None = done
        self.instance: Instance | None = None
        self.conn: InstanceConnection | None = None
        self.waiter: asyncio.Future[Instance] | None = None
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(pool.spec.timeout, self._expired)

    def wait(self, waiter: asyncio.Future[Instance]) -> None:
        self.waiter = waiter
        waiter.add_done_callback(self._ready)

    def _ready(self, waiter: asyncio.Future[Instance]) -> None:
        self.waiter = None
        if self.done is None:
            return  # timed out: ``_expired`` gave the instance back
        if waiter.cancelled():
            self._finish(Answer(503, "unavailable", f"function {self.pool.name} is stopping"))
            return
        exc = waiter.exception()
        if exc is not None:
            self._finish(refusal(exc))
            return
        instance = waiter.result()
        conn = instance.idle_connection()
        if conn is None:
            self.executor.spawn(self._connect(instance))
        else:
            self.send(instance, conn)

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
        conn.send(self.request, self._answered)

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
            self._finish(
                _streamed(self.executor, self.pool, instance, conn, response, self.timer.when())
            )
            return
        instance.keep(conn, response.keep_alive)
        if response.status < 500:
            self.pool.succeeded()
        self.pool.release(instance)
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
        timeout = self.pool.spec.timeout
        sent = False
        if self.conn is not None and self.instance is not None:
            sent = True
            self.conn.close()
            self.executor.kill(self.instance, f"timeout after {timeout:g}s")
            self.pool.release(self.instance)
        elif self.waiter is not None:
            self.pool.abandon(self.waiter)
            self.waiter = None
        # Connecting (``_connect``) releases the instance when it sees the timeout.
        self._finish(_timed_out(self.pool, timeout, sent))

    def _finish(self, result: InstanceResponse | Answer) -> None:
        done, self.done = self.done, None
        self.timer.cancel()
        if done is not None:
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
    """504: the function did not answer (its instance was killed), or no instance of it
    became ready in time."""
    if sent:
        message = (
            f"function {pool.name} did not answer within {timeout:g}s; its instance was killed"
        )
    else:
        message = f"no instance of {pool.name} became ready within {timeout:g}s"
    return Answer(504, "timeout", message)


def refusal(exc: BaseException) -> Answer:
    """The answer for an executor's refusal to serve (not found, crash loop, overloaded...)."""
    if isinstance(exc, CrashLoop):
        retry = str(max(1, math.ceil(exc.retry_after))).encode()
        return Answer(exc.status, exc.code, exc.message, [(b"retry-after", retry)])
    if isinstance(exc, ExecutorError):
        headers = [(b"retry-after", b"1")] if exc.status == 429 else None
        return Answer(exc.status, exc.code, exc.message, headers)
    return Answer(500, "internal_error", f"cannot start an instance: {exc}")


async def forward(
    executor: Executor,
    pool: FunctionPool,
    request: bytes,
    timeout: float | None = None,
    on_acquire: Callable[[Instance], None] | None = None,
) -> InstanceResponse | Answer:
    """``on_acquire`` learns which instance serves the request (to kill it on a cancel)."""
    if timeout is None:
        timeout = pool.spec.timeout
    instance: Instance | None = None
    sent = False
    try:
        async with asyncio.timeout(timeout) as scope:
            instance = pool.take_ready() or await pool.acquire()
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
                taken, instance = instance, None  # given back by the relay, or already
                return _streamed(executor, pool, taken, conn, response, scope.when() or 0.0)
            instance.keep(conn, response.keep_alive)
            if response.status < 500:
                pool.succeeded()
            return response
    except TimeoutError:
        if instance is not None and sent:
            executor.kill(instance, f"timeout after {timeout:g}s")
            return _timed_out(pool, timeout, sent=True)
        return _timed_out(pool, timeout, sent=False)
    except InstanceGone as exc:
        assert instance is not None
        return await _instance_died(executor, pool, instance, str(exc))
    except ExecutorError as exc:
        return refusal(exc)
    finally:
        if instance is not None:
            pool.release(instance)


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
