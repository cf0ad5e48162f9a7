"""A throw-away ``fissile up`` for system tests: free loopback ports, its own data directory,
driven through HTTP and the CLI as a user would."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
CLI_TIMEOUT = 300.0
T = TypeVar("T")


class PlatformFailure(Exception):
    """The platform did not start, stop, or do what it was asked; the message carries its
    output."""


@dataclass
class CLIResult:
    """One ``fissile`` command: its arguments, exit status and output."""

    args: list[str]
    rc: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def __str__(self) -> str:
        return (
            f"$ fissile {' '.join(self.args)}\n-> exit {self.rc}\n"
            f"--- stdout ---\n{self.out}--- stderr ---\n{self.err}"
        )


def wait_for(condition: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy, and return that; raise
    ``AssertionError`` naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Platform:
    """``fissile up`` in a subprocess (``start()``/``stop()``, or a ``with`` block).

    ``data_dir`` defaults to a temporary directory removed on ``stop()``; ``args`` are more
    ``fissile up`` options; ``cwd`` is where it runs. Requests go to the router
    (``get``/``post``/``request``/``call``), commands to the CLI (``cli``), which finds this
    platform's API and token by itself."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        args: Sequence[str] = (),
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self._own_dir = data_dir is None
        self.data_dir = (
            Path(tempfile.mkdtemp(prefix="fissile-platform-")) / "data"
            if data_dir is None
            else Path(data_dir)
        )
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.args = tuple(args)
        self.cwd = Path(cwd) if cwd is not None else None
        self.env = dict(env or {})
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-platform.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.api_port = 0
        self.http = httpx.Client(timeout=60.0)

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def output(self) -> str:
        """What ``fissile up`` printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- life --------------------------------------------------------------------------

    def start(self, timeout: float = STARTUP_TIMEOUT) -> Platform:
        """Start on free ports and wait until the control API answers ``/healthz``."""
        for _attempt in range(3):
            offset = len(self.output())
            self._launch()
            if self._wait_serving(timeout):
                return self
            if "cannot listen" not in self.output()[offset:]:
                raise PlatformFailure(f"fissile up exited before serving:\n{self.output()}")
            # A port was taken between picking and binding it: try others.
        raise PlatformFailure(f"fissile up could not get free ports:\n{self.output()}")

    def _launch(self) -> None:
        self.port, self.api_port = free_port(), free_port()
        env = dict(os.environ)
        for name in ("FISSILE_API", "FISSILE_TOKEN", "FISSILE_DATA_DIR"):
            env.pop(name, None)
        env.update(self.env)
        argv = [sys.executable, "-m", "fissile", "up", "--data-dir", str(self.data_dir)]
        argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--api-host", "127.0.0.1", "--api-port", str(self.api_port), *self.args]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=self.cwd
            )

    def _wait_serving(self, timeout: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if self.http.get(f"{self.api_url}/healthz", timeout=1.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise PlatformFailure(f"fissile up did not serve within {timeout:g}s:\n{self.output()}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); returns the exit status. Removes the
        data directory when it was a temporary one."""
        rc = None
        process = self.process
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                rc = process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                rc = process.wait()
        self.http.close()
        if self._own_dir:
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)
        return rc

    def __enter__(self) -> Platform:
        return self.start() if self.process is None else self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the CLI -----------------------------------------------------------------------

    def cli(
        self,
        *args: str,
        check: bool = True,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float = CLI_TIMEOUT,
    ) -> CLIResult:
        """Run ``fissile ARGS`` against this platform; with ``check`` (the default) a non-zero
        exit raises ``PlatformFailure`` with the command's output."""
        env = dict(os.environ)
        env.pop("FISSILE_TOKEN", None)
        env.update(self.env)
        env["FISSILE_API"] = self.api_url
        env["FISSILE_DATA_DIR"] = str(self.data_dir)  # where the CLI finds the token
        completed = subprocess.run(
            [sys.executable, "-m", "fissile", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        result = CLIResult(list(args), completed.returncode, completed.stdout, completed.stderr)
        if check and not result.ok:
            raise PlatformFailure(str(result))
        return result

    def apply(self, specdir: str | os.PathLike[str], *, wait: bool = True) -> CLIResult:
        """``fissile spec apply`` a spec directory, from its parent directory; with ``wait``
        (the default) its builds are finished, and failed ones raise, when this returns."""
        path = Path(specdir).resolve()
        args = ["spec", "apply", "--specdir", str(path)] + (["--wait"] if wait else [])
        return self.cli(*args, cwd=path.parent)

    # -- HTTP --------------------------------------------------------------------------

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        """A request to the router (``options`` are httpx's: ``json``, ``content``,
        ``headers``, ``params``, ``timeout``)."""
        return self.http.request(method, self.router_url + path, **options)

    def get(self, path: str, **options: Any) -> httpx.Response:
        return self.request("GET", path, **options)

    def post(self, path: str, **options: Any) -> httpx.Response:
        return self.request("POST", path, **options)

    def call(
        self,
        function: str,
        body: bytes | str | None = None,
        *,
        method: str | None = None,
        path: str = "",
        **options: Any,
    ) -> httpx.Response:
        """Call ``function`` directly (``/function/<name><path>``): POST with a ``body``,
        GET without one, unless ``method`` says."""
        if path and not path.startswith("/"):
            path = "/" + path
        chosen = method or ("POST" if body is not None or "json" in options else "GET")
        if body is not None:
            options["content"] = body
        return self.request(chosen, f"/function/{function}{path}", **options)

    def api(self, method: str, path: str, **options: Any) -> httpx.Response:
        """A request to the control API, with this platform's token."""
        token = (self.data_dir / "api-token").read_text().strip()
        headers = {"authorization": f"Bearer {token}", **options.pop("headers", {})}
        return self.http.request(method, self.api_url + path, headers=headers, **options)

    def logs(self, function: str, tail: int = 1000) -> str:
        """The function's log so far: what its instances printed and the platform's notes."""
        answer = self.api("GET", f"/v1/functions/{function}/logs", params={"tail": str(tail)})
        if answer.status_code != 200:
            raise PlatformFailure(f"logs of {function}: HTTP {answer.status_code}: {answer.text}")
        return answer.text

    def wait_for(
        self, condition: Callable[[], T], timeout: float = 30.0, what: str = "condition"
    ) -> T:
        """``fissile.testing.wait_for``, with the platform's output in the failure."""
        try:
            return wait_for(condition, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- fissile up ---\n{self.output()[-3000:]}") from None

    def __repr__(self) -> str:
        return f"<Platform {self.router_url} api {self.api_url}>"
