"""One running, isolated copy of a function: a process forked from a zygote."""

from __future__ import annotations

import asyncio
import enum
import json
import os
import signal
import time
from collections import deque
from typing import Any

from fissile.executor.connection import (
    InstanceConnection,
    InstanceGone,
    InstanceResponse,
    ResponseTooLarge,
    read_body,
)


class State(enum.Enum):
    warm = "warm"  # forked, sandboxed, no function yet
    specializing = "specializing"
    ready = "ready"
    draining = "draining"  # old code: finishes in-flight requests, takes no new ones
    dead = "dead"


# Members looked up once: ``State.dead`` goes through the enum class's attribute machinery
# (~160 ns in CPython 3.11, against ~10 for a global), and the router's hot path reads them.
DEAD = State.dead
READY = State.ready
DRAINING = State.draining


class Instance:
    def __init__(self, instance_id: str, env: str, socket_path: str, token: str) -> None:
        self.id = instance_id
        self.env = env
        self.socket_path = socket_path
        # Where connections go: the socket above, or one the program bound itself (image
        # command), reached through a descriptor held in ``path_fd``.
        self.connect_path = socket_path
        self.path_fd: int | None = None
        self.token = token
        self.pid = 0
        self.state = State.warm
        self.function: str | None = None
        # The build it was specialized on: a build some instance still runs is not pruned.
        self.deploy_dir: str | None = None
        self.generation = 0
        self.inflight = 0
        self.started_at = time.monotonic()
        self.last_used = self.started_at
        # When it became ready to serve its function (``time.monotonic()``): a request that
        # arrived before it and waited for it was a cold start.
        self.ready_at = 0.0
        self.exit_reason: str | None = None
        self.expected_exit = False  # retired by the platform, not crashed
        # Specialized and ready once: a death before that is its start's failure, counted
        # once by the pool as such, not as a crash too.
        self.loaded = False
        # Given a request once: its death after that is the request's doing (replaced at once),
        # before that the function's (counted toward the crash-loop back-off).
        self.served = False
        self.zygote: object | None = None
        self.cgroup: Any = None  # fissile.sandbox.cgroups.Group, when cgroups are in use
        self.memory_limit = 0
        self.limits: Any = None  # the cgroup's fissile.sandbox.cgroups.Limits, once set
        self.exited = asyncio.Event()
        # Set once its output pipe is closed (every process writing to it is gone).
        self.output_closed = asyncio.Event()
        # Its last output lines, kept while a program starts (executor/program.py).
        self.tail: deque[str] | None = None
        self._idle: list[InstanceConnection] = []

    @property
    def alive(self) -> bool:
        return self.state is not DEAD

    def idle_connection(self) -> InstanceConnection | None:
        """A kept-alive connection ready for a request, if there is one (no coroutine)."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    async def connection(self) -> InstanceConnection:
        conn = self.idle_connection()
        if conn is not None:
            return conn
        try:
            return await InstanceConnection.open(self.connect_path)
        except OSError as exc:
            raise InstanceGone(f"cannot connect to instance: {exc}") from exc

    def keep(self, conn: InstanceConnection, reusable: bool) -> None:
        if reusable and not conn.closed and self.state is not DEAD:
            self._idle.append(conn)
        else:
            conn.close()

    async def control(self, path: str, payload: object, timeout: float) -> InstanceResponse:
        """Call one of the runtime's control endpoints (``/_fissile/...``)."""
        body = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nhost: instance\r\nx-fissile-control: {self.token}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        conn = await self.connection()
        try:
            response = await asyncio.wait_for(conn.request(head.encode() + body), timeout)
        except BaseException:
            conn.close()
            raise
        if response.stream is not None:
            # The runtime's own answers are small; anything else is cut short.
            try:
                response.body = await asyncio.wait_for(read_body(response.stream, 1 << 20), timeout)
            except (ResponseTooLarge, TimeoutError):
                conn.close()
                raise InstanceGone("oversized or slow control response") from None
            response.stream = None
        self.keep(conn, response.keep_alive)
        return response

    async def prime(self, timeout: float = 5.0) -> None:
        """Open the connection specialization will use, with one request on it, while the
        instance is warm: a cold start then skips the connect, the accept and the first run
        of the instance's request path (~1-2 ms under the full sandbox)."""
        try:
            await self.control("/_fissile/healthz", {}, timeout)
        except Exception:
            pass  # it died, or is slow: a cold start finds out, as it would have

    def kill(self, reason: str | None = None) -> None:
        """Kill the instance and everything it started (its own process group)."""
        if reason and self.exit_reason is None:
            self.exit_reason = reason
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        if self.pid and self.state is not State.dead:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except OSError:
                    pass
            if self.cgroup is not None:
                # Processes that left the group with setsid() are still in the cgroup.
                try:
                    self.cgroup.kill_all(timeout=0)
                except OSError:
                    pass

    def mark_exited(self, status: int) -> None:
        if self.exit_reason is None:
            self.exit_reason = describe_exit(status)
        self.state = State.dead
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        if self.path_fd is not None:
            os.close(self.path_fd)
            self.path_fd = None
        self.exited.set()

    def __repr__(self) -> str:
        return f"<Instance {self.id} pid={self.pid} {self.state.value} fn={self.function}>"


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown"
        return f"killed by signal {number} ({name})"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"ended (wait status {status})"
