"""Forwarding one request to an instance of a function, with its timeout and failure answers."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable

from fissile.executor import Executor, ExecutorError
from fissile.executor.connection import InstanceGone, InstanceResponse
from fissile.executor.errors import CrashLoop
from fissile.executor.instance import Instance
from fissile.executor.pools import FunctionPool

logger = logging.getLogger("fissile.router")

# How long to wait for the zygote's exit report when an instance drops a connection, so the
# answer can name the cause (signal, exit status) instead of a bare "connection closed".
EXIT_REPORT_GRACE = 0.2


class Answer:
    """A response for the client that did not come from the function."""

    __slots__ = ("body", "code", "headers", "message", "status")

    def __init__(
        self, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self.headers = [(b"content-type", b"application/json"), *(headers or [])]


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
        async with asyncio.timeout(timeout):
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
            instance.keep(conn, response.keep_alive)
            if response.status < 500:
                pool.succeeded()
            return response
    except TimeoutError:
        if instance is not None and sent:
            reason = f"timeout after {timeout:g}s"
            executor.kill(instance, reason)
            return Answer(
                504,
                "timeout",
                f"function {pool.name} did not answer within {timeout:g}s; its instance was killed",
            )
        return Answer(
            504, "timeout", f"no instance of {pool.name} became ready within {timeout:g}s"
        )
    except InstanceGone as exc:
        assert instance is not None
        return await _instance_died(executor, pool, instance, str(exc))
    except CrashLoop as exc:
        retry = str(max(1, math.ceil(exc.retry_after))).encode()
        return Answer(exc.status, exc.code, exc.message, [(b"retry-after", retry)])
    except ExecutorError as exc:
        headers = [(b"retry-after", b"1")] if exc.status == 429 else None
        return Answer(exc.status, exc.code, exc.message, headers)
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
