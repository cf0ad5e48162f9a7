"""A streamed response body on its way from an instance to its consumer (a client connection,
an ASGI send, a caller inside the platform): counted against ``--max-response-body`` and the
function's timeout, with the consumer's flow control passed back to the instance's socket. The
instance stays taken until the body ends; a body that breaks a limit is cut and its instance
recycled, with a note in the function's log."""

from __future__ import annotations

import asyncio

from fissile.executor import Executor
from fissile.executor.connection import (
    BodySink,
    InstanceConnection,
    InstanceGone,
    InstanceResponse,
    ResponseTooLarge,
)
from fissile.executor.instance import Instance
from fissile.executor.pools import FunctionPool

# How long to wait for the zygote's exit report when an instance drops a connection, so the
# answer can name the cause (signal, exit status) instead of a bare "connection closed".
EXIT_REPORT_GRACE = 0.2


class ResponseTimedOut(Exception):
    """The function's timeout passed while its response body was still streaming."""


def recycle_oversized(
    executor: Executor, pool: FunctionPool, instance: Instance, conn: InstanceConnection
) -> None:
    """End an instance whose response broke ``--max-response-body``. The caller's request
    was the culprit, not the function's health: not counted as a crash, but noted."""
    limit = executor.max_response_body
    conn.close()
    executor.kill(instance, f"response body over {limit} bytes", crash=False)
    executor.logs.platform(
        pool.name,
        f"instance {instance.id}: response body exceeded --max-response-body ({limit} bytes);"
        " response cut, instance recycled",
        "WARNING",
    )


class BodyRelay:
    """The ``stream`` of a response ``forward`` hands over: a ``BodyStream`` to its consumer,
    the ``BodySink`` of the instance's connection."""

    __slots__ = (
        "conn",
        "executor",
        "finished",
        "instance",
        "keep_alive",
        "limit",
        "pool",
        "sink",
        "size",
        "status",
        "timer",
    )

    def __init__(
        self,
        executor: Executor,
        pool: FunctionPool,
        instance: Instance,
        conn: InstanceConnection,
        response: InstanceResponse,
        deadline: float,
    ) -> None:
        self.executor = executor
        self.pool = pool
        self.instance = instance
        self.conn = conn
        self.keep_alive = response.keep_alive
        self.status = response.status
        self.limit = executor.max_response_body
        self.size = 0
        self.sink: BodySink | None = None
        self.finished = False
        self.timer = asyncio.get_running_loop().call_at(deadline, self._expired)

    # -- BodyStream (the consumer's side) ------------------------------------------------

    def attach(self, sink: BodySink) -> None:
        self.sink = sink
        self.conn.attach(self)

    def pause(self) -> None:
        self.conn.pause()

    def resume(self) -> None:
        self.conn.resume()

    def cancel(self) -> None:
        """The consumer left: the instance's connection is closed (its runtime stops the
        body at its next write) and the instance given back, alive."""
        if self.finished:
            return
        self.sink = None
        self._finish()
        self.conn.close()
        self.pool.release(self.instance)

    # -- BodySink (the instance's side) --------------------------------------------------

    def body(self, data: bytes) -> None:
        if self.finished:
            return
        self.size += len(data)
        if self.size > self.limit:
            recycle_oversized(self.executor, self.pool, self.instance, self.conn)
            self._end(ResponseTooLarge(self.limit))
            return
        if self.sink is not None:
            self.sink.body(data)

    def end(self, error: Exception | None) -> None:
        if self.finished:
            return
        if error is None:
            self.instance.keep(self.conn, self.keep_alive)
            if self.status < 500:
                self.pool.succeeded()
            self._end(None)
            return
        self.conn.close()
        self._finish()
        self.executor.spawn(self._died(error))

    async def _died(self, error: Exception) -> None:
        instance = self.instance
        try:
            await asyncio.wait_for(instance.exited.wait(), EXIT_REPORT_GRACE)
        except TimeoutError:
            # Alive but broke off its response: not trusted again.
            self.executor.kill(instance, "closed the connection mid-response")
        finally:
            self.pool.release(instance)
        sink, self.sink = self.sink, None
        if sink is not None:
            reason = instance.exit_reason or str(error)
            sink.end(InstanceGone(f"the instance of {self.pool.name} died: {reason}"))

    def _expired(self) -> None:
        if self.finished:
            return
        timeout = self.pool.timeout
        self.conn.close()
        self.pool.overran(self.instance, timeout)  # not a crash (executor/pools.py)
        self._end(ResponseTimedOut(f"response not complete within {timeout:g}s"))

    def _finish(self) -> None:
        self.finished = True
        self.timer.cancel()

    def _end(self, error: Exception | None) -> None:
        """Done: the instance is given back (already recycled on an error)."""
        self._finish()
        self.pool.release(self.instance)
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.end(error)
