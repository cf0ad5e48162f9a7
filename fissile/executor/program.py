"""The executor's side of image ``command``: an instance that has exec'd the function's own
program is ready once that program answers HTTP on its socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from fissile.executor.connection import InstanceConnection
from fissile.executor.errors import LoadFailed
from fissile.executor.instance import Instance

#: Lines of a starting program's output kept for the error when it fails to start.
TAIL_LINES = 20
TAIL_LINE_CHARS = 500
# Any answer, whatever its status, means the program serves. The header is one a client
# cannot send (the router strips x-fissile-*), so a program may tell probes from calls.
PROBE = (
    b"GET /_fissile/ready HTTP/1.1\r\nhost: instance\r\nx-fissile-probe: ready\r\n"
    b"content-length: 0\r\n\r\n"
)
FIRST_RETRY = 0.005
LAST_RETRY = 0.1
# How long the output of a program that exited may take to reach its log after its exit.
OUTPUT_GRACE = 0.5


def follow_output(instance: Instance) -> None:
    """Keep the last lines the instance writes (``LogBook`` appends them) until it is ready."""
    instance.tail = deque(maxlen=TAIL_LINES)


async def wait_listening(instance: Instance, command: str, timeout: float) -> None:
    """Wait until the program answers a request on the instance's socket; ``LoadFailed``
    naming how it ended and its last output if it exits first, or says nothing within
    ``timeout`` (the function's)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    retry = FIRST_RETRY
    try:
        while not instance.exited.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise LoadFailed(
                    f"command {command!r} did not answer on its socket within {timeout:g}s"
                    f" (the function's timeout){_last_output(instance)}"
                )
            if await _probe(instance, remaining):
                return
            await asyncio.sleep(min(retry, max(deadline - loop.time(), 0)))
            retry = min(retry * 2, LAST_RETRY)
        # Its last lines may still be in the pipe when its exit is reported.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(instance.output_closed.wait(), OUTPUT_GRACE)
        raise LoadFailed(
            f"command {command!r} {instance.exit_reason or 'ended'} before it answered on its"
            f" socket{_last_output(instance)}"
        )
    finally:
        instance.tail = None


async def _probe(instance: Instance, timeout: float) -> bool:
    """One request on a new connection: True once answered (the connection is kept for the
    router), False when it failed or the instance exited meanwhile."""
    try:
        conn = await InstanceConnection.open(instance.socket_path)
    except OSError:
        return False
    answer: asyncio.Future[Any] = asyncio.ensure_future(conn.request(PROBE))
    exited: asyncio.Future[Any] = asyncio.ensure_future(instance.exited.wait())
    try:
        done, _ = await asyncio.wait(
            {answer, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        exited.cancel()
    if answer in done and answer.exception() is None:
        response = answer.result()
        # A body still streaming is not worth reading: the connection goes.
        instance.keep(conn, response.keep_alive and response.stream is None)
        return True
    answer.cancel()
    conn.close()
    return False


def _last_output(instance: Instance) -> str:
    if not instance.tail:
        return "; it wrote nothing"
    lines = [line[:TAIL_LINE_CHARS] for line in instance.tail]
    return "; its last output:\n" + "\n".join(lines)
