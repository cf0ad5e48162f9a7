"""Helpers of the system tests: a real ``fissile up`` driven only through the CLI and HTTP.

Every platform runs as a subprocess on free loopback ports with its own data directory. On the
way down each one is checked to leave no zygote (``fz-*``) or instance (``fi-*``) behind: their
pids are recorded from ``/proc`` (the platform's descendants) before it stops and must be gone
afterwards; the zygote's command line names the platform's pid (``--parent PID``), which also
finds processes that were re-parented to init.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

FISSILE = Path(sys.executable).parent / "fissile"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
# Dead children are re-parented to init, which reaps them when it gets to it; a zombie is dead.
GONE_TIMEOUT = 5.0
CLI_TIMEOUT = 120.0


# -- processes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str
    starttime: int
    comm: str


def _read_stat(pid: int) -> Proc | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) state ppid ..." -- comm may hold spaces and parentheses.
    head, _, rest = raw.rpartition(")")
    comm = head.split("(", 1)[1]
    fields = rest.split()
    return Proc(pid, int(fields[1]), fields[0], int(fields[19]), comm)


def process_table() -> dict[int, Proc]:
    table: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = _read_stat(int(entry))
            if proc is not None:
                table[proc.pid] = proc
    return table


def descendants(root: int) -> dict[int, Proc]:
    """Every process below ``root`` (children, grandchildren, ...), by pid."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found: dict[int, Proc] = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid in found or pid not in table:
            continue
        found[pid] = table[pid]
        stack.extend(children.get(pid, []))
    return found


def is_alive(proc: Proc) -> bool:
    """The same process (pid and start time) still exists and is not a zombie."""
    now = _read_stat(proc.pid)
    return now is not None and now.starttime == proc.starttime and now.state not in ("Z", "X")


def spawned_by(platform_pid: int) -> list[Proc]:
    """Live zygotes and instances (forks of a zygote) started for the platform ``platform_pid``."""
    found = []
    for proc in process_table().values():
        try:
            argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if b"fissile.executor._zygote" not in argv:
            continue
        wanted = (b"--parent", str(platform_pid).encode())
        if wanted in itertools.pairwise(argv) and is_alive(proc):
            found.append(proc)
    return found


def wait_gone(procs: list[Proc], timeout: float = GONE_TIMEOUT) -> list[Proc]:
    """Wait until every process in ``procs`` has ended; returns the survivors."""
    deadline = time.monotonic() + timeout
    while True:
        survivors = [p for p in procs if is_alive(p)]
        if not survivors or time.monotonic() > deadline:
            return survivors
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the CLI -------------------------------------------------------------------------------


@dataclass
class Result:
    args: list[str]
    rc: int
    out: str
    err: str

    def __str__(self) -> str:
        return (
            f"$ fissile {' '.join(self.args)}\n-> exit {self.rc}\n"
            f"--- stdout ---\n{self.out}--- stderr ---\n{self.err}"
        )

    @property
    def ok(self) -> bool:
        return self.rc == 0


def run_cli(
    api_url: str,
    *args: str,
    cwd: Path | None = None,
    timeout: float = CLI_TIMEOUT,
    data_dir: Path | None = None,
) -> Result:
    """Run the CLI against ``api_url``; with ``data_dir`` it finds the platform's token there,
    as a user's shell with FISSILE_DATA_DIR set would."""
    env = {**os.environ, "FISSILE_API": api_url}
    env.pop("FISSILE_TOKEN", None)
    if data_dir is not None:
        env["FISSILE_DATA_DIR"] = str(data_dir)
    completed = subprocess.run(
        [str(FISSILE), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Result(list(args), completed.returncode, completed.stdout, completed.stderr)


def assert_one_line_error(result: Result, *needles: str) -> None:
    """A failed command: exit 1, one ``Error:`` line on stderr, no traceback."""
    assert result.rc == 1, result
    assert "Traceback" not in result.err + result.out, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result
    assert lines[0].startswith("Error: "), result
    for needle in needles:
        assert needle in lines[0], result


# -- a platform ----------------------------------------------------------------------------


class Platform:
    """One ``fissile up`` subprocess on free loopback ports."""

    def __init__(
        self, data_dir: Path, extra_args: tuple[str, ...] = (), cwd: Path | None = None
    ) -> None:
        self.data_dir = data_dir
        self.extra_args = extra_args
        self.cwd = cwd  # where `fissile up` is started from
        self.log_path = data_dir.parent / f"{data_dir.name}-platform-{int(time.time() * 1e3)}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.port = 0
        self.api_port = 0
        self.http = httpx.Client(timeout=30.0)
        # What else `fissile up` inherits: variables, open file descriptors.
        self.extra_env: dict[str, str] = {}
        self.pass_fds: tuple[int, ...] = ()

    # where it listens
    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stderr(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # life
    def start(self) -> Platform:
        """Launch and wait until it serves; fails the test with its stderr otherwise."""
        for _attempt in range(3):
            self.launch()
            if self.wait_serving():
                return self
            if "cannot listen" not in self.stderr()[self._log_offset :]:
                pytest.fail(
                    f"fissile up exited with {self.process.returncode if self.process else None}"
                    f" before serving:\n{self.stderr()}"
                )
            # A port was taken between picking and binding it: try others.
        pytest.fail(f"fissile up could not get free ports:\n{self.stderr()}")

    def launch(self) -> None:
        """Start ``fissile up`` on free ports, without waiting."""
        self.port, self.api_port = free_port(), free_port()
        env = dict(os.environ)
        env.pop("FISSILE_API", None)
        # Builds must not need the network: pip may only use local paths.
        env["PIP_NO_INDEX"] = "1"
        env.update(self.extra_env)
        args = [
            str(FISSILE),
            "up",
            "--data-dir",
            str(self.data_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--api-host",
            "127.0.0.1",
            "--api-port",
            str(self.api_port),
            *self.extra_args,
        ]
        self._log_offset = len(self.stderr())
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.cwd,
                pass_fds=self.pass_fds,
            )

    def wait_serving(self, timeout: float = STARTUP_TIMEOUT) -> bool:
        """True once /healthz answers 200, False if the process exits first."""
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
        self.abandon()
        pytest.fail(f"fissile up did not serve /healthz within {timeout:g}s:\n{self.stderr()}")

    def children(self) -> list[Proc]:
        """The platform's descendants right now, plus zygote forks re-parented elsewhere."""
        found = descendants(self.pid)
        for proc in spawned_by(self.pid):
            found.setdefault(proc.pid, proc)
        return list(found.values())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal the platform and wait for it to exit; returns its exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"fissile up did not exit within {timeout:g}s of signal {sig}")

    def stop_cleanly(self) -> None:
        """SIGTERM: exit status 0, and no zygote or instance left behind."""
        before = self.children()
        # Not a vacuous check: the built-in python environment always has a zygote running.
        assert any(p.comm.startswith("fz-") for p in before), before
        pid = self.pid
        rc = self.stop()
        survivors = wait_gone(before) + spawned_by(pid)
        self.http.close()
        assert rc == 0, f"fissile up exited with {rc} on SIGTERM:\n{self.stderr()[-3000:]}"
        assert not survivors, f"processes outlived fissile up: {survivors}"

    def abandon(self) -> None:
        """Best-effort cleanup after a failed test: kill what we started, by pid."""
        if self.process is not None and self.process.poll() is None:
            before = self.children()
            self.process.kill()
            self.process.wait()
            for proc in wait_gone(before, 3.0):
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
        self.http.close()

    # use
    def cli(self, *args: str, cwd: Path | None = None, timeout: float = CLI_TIMEOUT) -> Result:
        return run_cli(self.api_url, *args, cwd=cwd, timeout=timeout, data_dir=self.data_dir)

    def ok(self, *args: str, cwd: Path | None = None) -> Result:
        """Run a command that must succeed."""
        result = self.cli(*args, cwd=cwd)
        assert result.rc == 0, result
        assert "Traceback" not in result.err, result
        return result

    def ok_many(self, *commands: tuple[str, ...]) -> list[Result]:
        """Run independent commands that must all succeed, two at a time (the CLI's start-up
        is most of a command's cost)."""
        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(lambda args: self.ok(*args), commands))

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(self.router_url + path, **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, self.router_url + path, **kwargs)

    def json_of(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json").out)


def write(path: Path, text: str) -> Path:
    """Write ``text`` (dedented) to ``path``, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def error_of(response: httpx.Response) -> dict[str, str]:
    """The router's ``{"error": {"code", "message"}}`` body."""
    assert response.headers.get("content-type", "").startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, str] = body["error"]
    return error


# ``spawn(data_dir=None, *extra_args, cwd=None)``: the fixture that starts dedicated platforms.
Spawn = Callable[..., Platform]


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it is truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.05)


class Neighbour:
    """Calls ``/function/neighbour`` (answering ``{"ok": true}``) in a loop while a hostile
    function probes; on exit, asserts it was answered correctly throughout and at least once
    after the probe."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.answers: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self.platform.get("/function/neighbour", timeout=15.0)
                self.answers.append((response.status_code, response.text))
            except Exception as exc:  # a failure is a finding, not a crash of the test
                self.answers.append((0, repr(exc)))
            time.sleep(0.02)

    def __enter__(self) -> Neighbour:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # At least one answer after the probe, so the neighbour is seen serving afterwards.
        seen = len(self.answers)
        deadline = time.monotonic() + 15
        while len(self.answers) <= seen and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        self._thread.join(20)
        assert self.answers, "the neighbour was never called"
        bad = [a for a in self.answers if a != (200, '{"ok": true}')]
        assert not bad, f"the neighbour suffered: {bad[:5]}"
