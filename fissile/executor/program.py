"""The executor's side of image ``command``: an instance that has exec'd the function's own
program is ready once that program answers HTTP, on the socket it inherited (fd 3) or on one it
bound at the path it was given (``FISSILE_SOCKET``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
from collections import deque
from collections.abc import Callable
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


def socket_of(answer: bytes) -> str | None:
    """The path the program may bind its own socket at, from the specialization's answer."""
    try:
        path = json.loads(answer).get("socket")
    except (ValueError, AttributeError):
        return None
    return path if isinstance(path, str) else None


def follow_output(instance: Instance) -> None:
    """Keep the last lines the instance writes (``LogBook`` appends them) until it is ready."""
    instance.tail = deque(maxlen=TAIL_LINES)


async def wait_listening(
    instance: Instance, command: str, timeout: float, path: str | None = None
) -> None:
    """Wait until the program answers a request, on its inherited socket or, when the runtime
    gave it one, on a socket it bound at ``path`` (as the instance sees it); ``LoadFailed``
    naming how it ended and its last output if it exits first, or says nothing within
    ``timeout`` (the function's)."""
    ways = [_serving(instance, lambda: instance.socket_path)]
    if path:
        ways.append(_serving(instance, lambda: _bound_socket(instance, path)))
    tasks = [asyncio.ensure_future(way) for way in ways]
    exited = asyncio.ensure_future(instance.exited.wait())
    try:
        done, _ = await asyncio.wait(
            [*tasks, exited], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if any(task in done and task.exception() is None for task in tasks):
            return
        if not instance.exited.is_set():
            raise LoadFailed(
                f"command {command!r} did not answer on its socket within {timeout:g}s"
                f" (the function's timeout){_last_output(instance)}"
            )
        # Its last lines may still be in the pipe when its exit is reported.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(instance.output_closed.wait(), OUTPUT_GRACE)
        raise LoadFailed(
            f"command {command!r} {instance.exit_reason or 'ended'} before it answered on its"
            f" socket{_last_output(instance)}"
        )
    finally:
        for task in (*tasks, exited):
            task.cancel()
        instance.tail = None


async def _serving(instance: Instance, address: Callable[[], str | None]) -> None:
    """Probe ``address()`` (None: not there yet) until the program answers there."""
    retry = FIRST_RETRY
    while True:
        target = address()
        if target is not None and await _probe(instance, target):
            instance.connect_path = target
            return
        await asyncio.sleep(retry)
        retry = min(retry * 2, LAST_RETRY)


def _bound_socket(instance: Instance, path: str) -> str | None:
    """A path this process can connect to the program's own socket by, or None while there is
    none. The instance's filesystem is the tenant's: every component of ``path`` is opened
    below the instance's root without following a symbolic link (which would resolve in the
    supervisor's root), and the last must be a socket; the connection then goes through the
    descriptor (``/proc/self/fd/N``), never through a name the tenant could change."""
    if instance.path_fd is not None:
        return f"/proc/self/fd/{instance.path_fd}"
    parts = [part for part in path.split("/") if part]
    if not parts or ".." in parts or not instance.pid:
        return None
    opened: list[int] = []
    try:
        fd = os.open(f"/proc/{instance.pid}/root", os.O_PATH | os.O_DIRECTORY)
        opened.append(fd)
        for part in parts[:-1]:
            fd = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            opened.append(fd)
        fd = os.open(parts[-1], os.O_PATH | os.O_NOFOLLOW, dir_fd=fd)
    except OSError:
        return None
    finally:
        for directory in opened:
            os.close(directory)
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    instance.path_fd = fd
    return f"/proc/self/fd/{fd}"


async def _probe(instance: Instance, target: str) -> bool:
    """One request on a new connection: True once answered (the connection is kept for the
    router), False when it failed or the instance exited meanwhile."""
    try:
        conn = await InstanceConnection.open(target)
    except OSError:
        return False
    answer: asyncio.Future[Any] = asyncio.ensure_future(conn.request(PROBE))
    exited: asyncio.Future[Any] = asyncio.ensure_future(instance.exited.wait())
    try:
        done, _ = await asyncio.wait({answer, exited}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        conn.close()
        raise
    finally:
        exited.cancel()
        if not answer.done():
            answer.cancel()
    if answer in done and answer.exception() is None:
        response = answer.result()
        # A body still streaming is not worth reading: the connection goes.
        instance.keep(conn, response.keep_alive and response.stream is None)
        return True
    conn.close()
    return False


def _last_output(instance: Instance) -> str:
    if not instance.tail:
        return "; it wrote nothing"
    lines = [line[:TAIL_LINE_CHARS] for line in instance.tail]
    return "; its last output:\n" + "\n".join(lines)
