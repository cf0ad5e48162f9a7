"""The supervisor's side of a zygote: start it, ask it to fork, hear about exits."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from fissile.sandbox import base_environment

logger = logging.getLogger("fissile.executor")

ExitCallback = Callable[[int, int], None]
ForkCallback = Callable[[str, int], None]


class ZygoteError(Exception):
    pass


def _zygote_environment() -> dict[str, str]:
    """``base_environment()``, plus where the dynamic linker finds a Python built with a shared
    libpython outside the system's paths (instances drop it from ``os.environ`` again)."""
    env = base_environment()
    if "LD_LIBRARY_PATH" in os.environ:
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    return env


# Longer lines of a zygote's output are cut here.
MAX_OUTPUT_LINE = 4096


async def _relay_output(env: str, stream: asyncio.StreamReader) -> None:
    """Log a zygote's output, line by line, until it and every process sharing it are gone."""
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # longer than the stream's limit: that much was dropped
            logger.warning("the %s zygote wrote an overlong line (dropped)", env)
            continue
        if not line:
            return
        text = line[:MAX_OUTPUT_LINE].decode(errors="replace").rstrip()
        logger.warning("the %s zygote: %s", env, text)


class Zygote:
    def __init__(
        self, env: str, preload: list[str], on_forked: ForkCallback, on_exit: ExitCallback
    ) -> None:
        self.env = env
        self.preload = preload
        # Both callbacks run synchronously as messages arrive, so an instance is registered
        # under its pid before the message about its exit can be handled.
        self.on_forked = on_forked
        self.on_exit = on_exit
        self.on_death: Callable[[Zygote], None] | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.control: socket.socket | None = None
        self.preload_failures: dict[str, str] = {}
        self.modules: frozenset[str] = frozenset()  # top-level modules it has imported
        self.imported: list[str] = []  # a package zygote's own imports, beyond its parent's
        self.parent: Zygote | None = None
        self._pid: int | None = None  # a package zygote's (no subprocess of ours)
        self.alive = False
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._forks: dict[str, asyncio.Future[int]] = {}
        self._relay: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        if self._pid is not None:
            return self._pid
        return self.process.pid if self.process else None

    async def start(self, timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control = ours
        ours.setblocking(False)
        self._ready = loop.create_future()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",  # no cwd on sys.path: functions must not import the operator's files
            "-m",
            "fissile.executor._zygote",
            "--fd",
            str(theirs.fileno()),
            "--parent",
            str(os.getpid()),
            "--env",
            self.env,
            "--preload",
            ",".join(self.preload),
            pass_fds=[theirs.fileno()],
            close_fds=True,  # uvloop ignores it: the zygote closes the rest itself
            # Never the supervisor's environment: its strings would stay readable on the
            # zygote's stack (and so every instance's) however os.environ is cleared later.
            env=_zygote_environment(),
            stdin=asyncio.subprocess.DEVNULL,
            # The zygote's output (a failed fork's traceback, a preload's prints) comes back
            # through a pipe into the supervisor's log, never onto the supervisor's own
            # stdout/stderr, which instances could otherwise write to.
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd="/",
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops us in order
        )
        theirs.close()
        assert self.process.stdout is not None
        self._relay = loop.create_task(_relay_output(self.env, self.process.stdout))
        loop.add_reader(ours.fileno(), self._readable)
        try:
            ready = await asyncio.wait_for(self._ready, timeout)
        except (TimeoutError, ZygoteError):
            await self.stop()
            raise ZygoteError(f"the {self.env} zygote did not start within {timeout:g}s") from None
        except asyncio.CancelledError:
            # Cancelled before it was ready (the platform stopping as it starts): killed and
            # reaped, not left running with its pipe open.
            await self.stop(timeout=0)
            raise
        self._started(ready)
        for module, error in self.preload_failures.items():
            logger.warning("environment %s: cannot preload %s: %s", self.env, module, error)

    def _started(self, ready: dict[str, Any]) -> None:
        self.alive = True
        self.preload_failures = ready.get("preload_failures") or {}
        self.modules = frozenset(ready.get("modules") or ())
        self.imported = list(ready.get("imported") or ())

    async def fork_zygote(
        self, zygote_id: str, modules: list[str], timeout: float = 60.0
    ) -> Zygote:
        """A package zygote: forked from this one after importing ``modules`` (those the
        environment's Python has), serving forks like this one."""
        if not self.alive or self.control is None:
            raise ZygoteError(f"the {self.env} zygote is not running")
        loop = asyncio.get_running_loop()
        child = Zygote(self.env, modules, self.on_forked, self.on_exit)
        child.parent = self
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        child.control = ours
        child._ready = loop.create_future()
        loop.add_reader(ours.fileno(), child._readable)
        forked: asyncio.Future[int] = loop.create_future()
        self._forks[zygote_id] = forked
        message = {"op": "zygote", "id": zygote_id, "modules": modules}
        try:
            try:
                socket.send_fds(self.control, [json.dumps(message).encode()], [theirs.fileno()])
            except OSError as exc:
                self._forks.pop(zygote_id, None)
                raise ZygoteError(f"cannot reach the {self.env} zygote: {exc}") from exc
            finally:
                theirs.close()
            child._pid = await forked
            ready = await asyncio.wait_for(child._ready, timeout)
        except BaseException:
            await child.stop()
            raise
        child._started(ready)
        return child

    async def fork(
        self,
        instance_id: str,
        listener: socket.socket,
        log_fd: int,
        token: str,
        sandbox: dict[str, Any],
    ) -> int:
        if not self.alive or self.control is None:
            raise ZygoteError(f"the {self.env} zygote is not running")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._forks[instance_id] = future
        message = {"op": "fork", "id": instance_id, "token": token, "sandbox": sandbox}
        try:
            socket.send_fds(
                self.control, [json.dumps(message).encode()], [listener.fileno(), log_fd]
            )
        except OSError as exc:
            self._forks.pop(instance_id, None)
            raise ZygoteError(f"cannot reach the {self.env} zygote: {exc}") from exc
        return await future

    def _readable(self) -> None:
        assert self.control is not None
        while True:
            try:
                data = self.control.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            message = json.loads(data)
            op = message.get("op")
            if op == "exit":
                self.on_exit(message["pid"], message["status"])
            elif op == "forked":
                self.on_forked(message["id"], message["pid"])
                future = self._forks.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message["pid"])
            elif op == "fork_failed":
                future = self._forks.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_exception(ZygoteError(f"fork failed: {message['error']}"))
            elif op == "ready" and self._ready is not None and not self._ready.done():
                self._ready.set_result(message)

    def _lost(self) -> None:
        was_alive = self.alive
        self.alive = False
        if self.control is not None:
            asyncio.get_running_loop().remove_reader(self.control.fileno())
            self.control.close()
            self.control = None
        error = ZygoteError(f"the {self.env} zygote exited")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        for future in self._forks.values():
            if not future.done():
                future.set_exception(error)
        self._forks.clear()
        if was_alive:
            logger.error("the %s zygote exited unexpectedly", self.env)
            if self.on_death is not None:
                self.on_death(self)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the zygote; it kills the instances it forked before exiting."""
        self.alive = False
        if self.control is not None:
            try:
                self.control.send(json.dumps({"op": "shutdown"}).encode())
            except OSError:
                pass
            asyncio.get_running_loop().remove_reader(self.control.fileno())
            self.control.close()
            self.control = None
        if self.process is None:
            return  # a package zygote: its parent reaps it
        if self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
            except asyncio.CancelledError:
                # A stop cancelled (an environment's, spawned on its delete, when the platform
                # stops): the zygote still goes, reaped.
                self.process.kill()
                await self.process.wait()
                raise
        if self._relay is not None:  # its last lines, until the pipe's other end is gone
            await asyncio.wait([self._relay], timeout=1.0)
