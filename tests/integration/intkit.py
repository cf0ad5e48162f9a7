"""Helpers of the integration tests: a real executor on a real store, and polling."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path
from typing import Any

import uvicorn

from fissile.executor import Executor
from fissile.models import BuildState, BuildStatus, FunctionSpec
from fissile.observability import LogBook
from fissile.store.sqlite import SQLiteStore

SOURCE_SHA = "0" * 64


async def until(condition: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll ``condition`` until it is truthy; fail with a clear message at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class QuietServer(uvicorn.Server):
    """uvicorn's server without its signal handlers: the test runner keeps its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def serving(app: Any, http: Any, **options: Any) -> AsyncIterator[tuple[QuietServer, int]]:
    """``app`` served with the protocol ``http`` on a free loopback port until the block ends;
    yields the server and its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=http, lifespan="off", log_level="warning", **options)
    server = QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until(lambda: server.started)
    try:
        yield server, sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its parent to reap it does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Harness:
    """A real executor on a real store, and helpers to deploy hand-written functions."""

    def __init__(self, root: Path, sandbox_mode: str = "off") -> None:
        self.root = root
        self.deploy_root = root / "deploy"
        self.deploy_root.mkdir()
        self.store = SQLiteStore(root / "fissile.db")
        self.logs = LogBook(root / "logs")
        self.executor = Executor(self.store, self.deploy_root, self.logs, sandbox_mode=sandbox_mode)
        self.stopped = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.executor.stop()

    def package(self, name: str, files: dict[str, str]) -> str:
        """Write a deploy directory by hand and a package record that points at it."""
        key = f"{name}-deploy"
        target = self.deploy_root / key
        target.mkdir()
        for relative, text in files.items():
            (target / relative).write_text(text)
        status = BuildStatus(state=BuildState.succeeded, deploy=key)
        data = {
            "name": name,
            "env": "python",
            "source": SOURCE_SHA,
            "buildcmd": None,
            "owner": None,
            "status": status.model_dump(mode="json"),
        }
        self.store.create("packages", name, data)
        return key

    def function(self, name: str, code: str, **fields: Any) -> FunctionSpec:
        """A package holding ``code`` as a single module, and a function on it."""
        self.package(f"{name}-pkg", {f"fx_{name.replace('-', '_')}.py": code})
        spec = FunctionSpec(name=name, env="python", package=f"{name}-pkg", **fields)
        self.store.create("functions", name, spec.model_dump(mode="json"))
        return spec

    def update_function(self, name: str, **fields: Any) -> None:
        record = self.store.get("functions", name)
        spec = FunctionSpec.model_validate({**record.data, **fields})
        self.store.update("functions", name, spec.model_dump(mode="json"))

    def pids(self) -> set[int]:
        """Every process the executor started: zygotes and instances."""
        pids = {env.zygote.pid for env in self.executor.environments.values() if env.zygote}
        pids |= {i.pid for env in self.executor.environments.values() for i in env.warm if i.pid}
        for pool in self.executor.functions.values():
            pids |= {i.pid for i in [*pool.instances, *pool.draining] if i.pid}
        pids |= set(self.executor._by_pid)
        return {pid for pid in pids if pid}


def kill_survivors(pids: list[int]) -> None:
    """SIGKILL whichever of ``pids`` (processes a test started) still run."""
    for pid in pids:
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
