"""Shared pieces of the benchmarks: machine info, percentiles, free ports, a tiny HTTP client,
and starting/stopping what a benchmark runs (a fissile platform, a bare uvicorn app, wrk).

Everything a benchmark starts it also stops, by pid: the platform with SIGTERM (then a check
that it and every process it started are gone), a baseline server the same way. Nothing here
signals a process it did not start.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PYTHON = sys.executable

HELLO_BODY = b"Hello, world!"

# Servers under test run in their own session, as a service would. With the kernel's
# autogroup scheduling (sched_autogroup_enabled=1) a session is one CPU-scheduling group, and
# sharing one with the benchmark's own processes measurably hurt fissile: any process there
# that merely wakes up every 100 ms (an idle uvicorn does) stretched fissile's warm p99 from
# ~15 ms to 100-1500 ms on 2 CPUs. Ctrl-C still stops them: the benchmarks stop what they
# started in `finally` blocks.
SERVER_SESSION = True

# A bare ASGI app answering like the fissile hello: the baseline of the warm benchmark and of
# the "start a server and answer its first request" cold-start baseline.
BARE_APP = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", b"13"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"Hello, world!"})
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- results ------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
        "memory_total_mib": _mem_total_mib(),
        "git_commit": _git_commit(),
        "packages": _versions(["uvicorn", "uvloop", "httptools"]),
    }
    try:
        import fissile

        info["fissile"] = fissile.__version__
    except ImportError:
        pass
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_total_mib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "fissile"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip() or None
    if commit and dirty.stdout.strip():
        commit += "+dirty"
    return commit


def _versions(names: Iterable[str]) -> dict[str, str | None]:
    from importlib import metadata

    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def summarize(samples_ms: Sequence[float]) -> dict[str, Any]:
    """n, mean, min, p50, p90, p99, max of samples in milliseconds (linear interpolation)."""
    if not samples_ms:
        return {"n": 0}
    ordered = sorted(samples_ms)
    return {
        "n": len(ordered),
        "mean": round(sum(ordered) / len(ordered), 3),
        "min": round(ordered[0], 3),
        "p50": round(percentile(ordered, 50), 3),
        "p90": round(percentile(ordered, 90), 3),
        "p99": round(percentile(ordered, 99), 3),
        "max": round(ordered[-1], 3),
    }


def percentile(ordered: Sequence[float], pct: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def write_results(name: str, result: dict[str, Any], output: str | None = None) -> Path:
    result.setdefault("machine", {})["loadavg_at_end"] = list(os.getloadavg())
    path = Path(output) if output else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _without_local_paths(json.dumps(result, indent=2))
    path.write_text(text + "\n")
    print(text, flush=True)
    log(f"results written to {path}")
    return path


def _without_local_paths(text: str) -> str:
    """Results are committed: this machine's paths become placeholders."""
    for local, placeholder in (
        (sys.prefix, "<venv>"),
        (sys.base_prefix, "<python>"),
        (str(REPO), "<repo>"),
        (tempfile.gettempdir(), "<tmp>"),
        (os.path.expanduser("~"), "<home>"),
    ):
        if local and local != "/":
            text = text.replace(json.dumps(local)[1:-1], placeholder)
    return text


# -- ports and HTTP -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get_request(path: str, host: str = "127.0.0.1") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fissile-bench\r\n\r\n".encode()


class RawHTTP:
    """A minimal keep-alive HTTP/1.1 client on a blocking socket (TCP or unix).

    Deliberately tiny so its own cost stays small and equal for every server it measures.
    Responses must carry a Content-Length (fissile, uvicorn and the instance runtime all do).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    def tcp(cls, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> RawHTTP:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    @classmethod
    def unix(cls, path: str, timeout: float = 30.0) -> RawHTTP:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(path)
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    def request(self, raw: bytes) -> tuple[int, bytes]:
        self.sock.sendall(raw)
        return self.response()

    def response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            rest += self._recv()
        self.buffer = rest[length:]
        return status, rest[:length]

    def _more(self) -> None:
        self.buffer += self._recv()

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        return data


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on 127.0.0.1:{port} after {timeout}s"
                ) from None
            time.sleep(0.002)


def http_get(port: int, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    client = RawHTTP.tcp(port, timeout=timeout)
    try:
        return client.request(get_request(path))
    finally:
        client.close()


# -- processes ----------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time in clock ticks) of a live process, from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> list[tuple[int, int]]:
    """Every live descendant of ``root`` as (pid, start time): identifies them across reuse."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append((int(entry), stat[1]))
    found: list[tuple[int, int]] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def still_alive(procs: Iterable[tuple[int, int]]) -> list[int]:
    alive = []
    for pid, started in procs:
        stat = _proc_stat(pid)
        if stat is not None and stat[1] == started:
            alive.append(pid)
    return alive


def stop_process(proc: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> dict[str, Any]:
    """SIGTERM ``proc``, wait for it and for every process it started; report how it went."""
    tree = descendants(proc.pid)
    report: dict[str, Any] = {"pid": proc.pid, "descendants_before_stop": len(tree)}
    started = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
        report["exit_code"] = proc.returncode
    except subprocess.TimeoutExpired:
        log(f"{what} (pid {proc.pid}) ignored SIGTERM for {timeout}s; sending SIGKILL")
        report["stack_dump"] = _stack_dump(proc.pid)
        proc.kill()
        proc.wait()
        report["exit_code"] = proc.returncode
        report["killed"] = True
    report["stop_seconds"] = round(time.monotonic() - started, 3)
    deadline = time.monotonic() + 5
    left = still_alive(tree)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = still_alive(tree)
    if left:
        # Only processes this run started (descendants recorded above, matched by start time).
        log(f"{what}: {len(left)} process(es) outlived it: {left}; killing them")
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    report["leftover_processes"] = left
    return report


def _tree_cpu_ticks(root: int) -> int:
    """CPU ticks used by ``root`` and everything it started, including reaped children."""
    total = 0
    for pid in [root, *(pid for pid, _ in descendants(root))]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total


def _machine_ticks() -> tuple[int, int, int]:
    """(busy, irq + softirq, total) CPU ticks of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - idle, fields[5] + fields[6], total


class CpuMeter:
    """How busy the machine was during a measurement, and how much of that was not ours.

    Other work on the machine (another test suite, a build) skews every figure here; this
    puts a number on it. Values are percent of the whole machine (all CPUs = 100). Interrupt
    time (mostly loopback networking, largely our own traffic) is reported on its own: the
    kernel does not charge it to any process.
    """

    def __init__(self) -> None:
        self.begin = (0, 0, 0, 0)

    def start(self) -> CpuMeter:
        self.begin = (*_machine_ticks(), _tree_cpu_ticks(os.getpid()))
        return self

    def stop(self) -> dict[str, float]:
        busy, irq, total, ours = (*_machine_ticks(), _tree_cpu_ticks(os.getpid()))
        span = max(total - self.begin[2], 1)
        machine = 100 * (busy - self.begin[0]) / span
        interrupts = 100 * (irq - self.begin[1]) / span
        mine = min(100 * (ours - self.begin[3]) / span, machine - interrupts)
        return {
            "machine_busy_pct": round(machine, 1),
            "this_benchmark_pct": round(mine, 1),
            "interrupts_pct": round(interrupts, 1),
            "other_processes_pct": round(max(machine - interrupts - mine, 0.0), 1),
        }


def wait_until_quiet(max_wait: float, threshold: float = 10.0) -> dict[str, Any]:
    """Wait (at most ``max_wait`` s) for a second in which other processes use < threshold %."""
    begin = time.monotonic()
    other = None
    while True:
        meter = CpuMeter().start()
        time.sleep(1.0)
        other = meter.stop()["other_processes_pct"]
        if other < threshold or time.monotonic() - begin >= max_wait:
            break
    waited = round(time.monotonic() - begin, 1)
    if other >= threshold:
        log(f"machine still busy after {waited}s: other processes use {other}% of the CPUs")
    return {"waited_s": waited, "other_processes_pct": other}


def _stack_dump(pid: int) -> str | None:
    """Python stacks of a hung process, with py-spy if it is installed (on PATH or named by
    $FISSILE_BENCH_PYSPY); the hang itself is the finding, this says where it is."""
    pyspy = os.environ.get("FISSILE_BENCH_PYSPY") or shutil.which("py-spy")
    if not pyspy:
        return None
    try:
        out = subprocess.run(
            [pyspy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"py-spy failed: {exc}"
    dump = out.stdout or out.stderr
    log(f"stacks of pid {pid}:\n{dump}")
    return dump


class BareUvicorn:
    """The baseline: one uvicorn worker (httptools + uvloop, access log off) serving BARE_APP."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        (workdir / "bare_app.py").write_text(BARE_APP)

    def command(self) -> list[str]:
        return [
            PYTHON,
            "-m",
            "uvicorn",
            "--app-dir",
            str(self.workdir),
            "bare_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--http",
            "httptools",
            "--loop",
            "uvloop",
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
            "--lifespan",
            "off",
        ]

    def start(self, timeout: float = 30.0) -> float:
        """Start it; returns seconds until the port accepted connections."""
        begin = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, start_new_session=SERVER_SESSION
        )
        wait_for_port(self.port, timeout, self.proc)
        return time.perf_counter() - begin

    def stop(self) -> dict[str, Any]:
        assert self.proc is not None
        report = stop_process(self.proc, "uvicorn")
        self.proc = None
        return report

    def __enter__(self) -> BareUvicorn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.stop()


FF_SOURCE = """\
def hello(request):
    return "Hello, world!"
"""


class FunctionsFramework:
    """Google's functions-framework (its default production server, gunicorn) serving the same
    hello, as ``functions-framework --target hello`` runs it."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.source = workdir / "ff_main.py"
        self.source.write_text(FF_SOURCE)

    @staticmethod
    def available() -> bool:
        import importlib.util

        return importlib.util.find_spec("functions_framework") is not None

    def command(self) -> list[str]:
        script = Path(PYTHON).parent / "functions-framework"
        return [
            str(script),
            "--target",
            "hello",
            "--source",
            str(self.source),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]

    def start(self, timeout: float = 30.0) -> float:
        begin = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=SERVER_SESSION,
        )
        wait_for_port(self.port, timeout, self.proc)
        return time.perf_counter() - begin

    def stop(self) -> dict[str, Any]:
        assert self.proc is not None
        report = stop_process(self.proc, "functions-framework")
        self.proc = None
        return report


def memory_of(pid: int) -> dict[str, float] | None:
    """MiB a process maps: rss, pss (its share of shared pages) and private (pages only it
    maps: what it costs on top of what it shares), from /proc/<pid>/smaps_rollup."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kib: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            kib[name] = int(parts[0])
    private = kib.get("Private_Clean", 0) + kib.get("Private_Dirty", 0)
    return {
        "rss_mib": round(kib.get("Rss", 0) / 1024, 2),
        "pss_mib": round(kib.get("Pss", 0) / 1024, 2),
        "private_mib": round(private / 1024, 2),
    }


class Platform:
    """``fissile up`` on free loopback ports with a throwaway data dir."""

    def __init__(
        self, workdir: Path, extra_args: Sequence[str] = (), prefix: Sequence[str] = ()
    ) -> None:
        self.workdir = workdir
        self.extra_args = tuple(extra_args)
        self.prefix = tuple(prefix)  # a command the platform runs under (valgrind...)
        self.data_dir = workdir / "data"
        self.port = free_port()
        self.api_port = free_port()
        while self.api_port == self.port:
            self.api_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "fissile-up.log"
        self.startup_seconds: float | None = None
        self.token: str | None = None
        self.stop_report: dict[str, Any] | None = None
        self._log: io.BufferedWriter | None = None
        self._client: Any = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 60.0) -> None:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        begin = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                PYTHON,
                "-m",
                "fissile",
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
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=SERVER_SESSION,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"fissile up exited ({self.proc.returncode}):\n{self.log_tail()}"
                )
            try:
                status, _ = http_get(self.api_port, "/healthz", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"fissile up not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.02)
        self.startup_seconds = round(time.perf_counter() - begin, 3)
        from fissile.client import Client

        # The control API wants the bearer token the platform wrote in its data dir.
        self.token = (self.data_dir / "api-token").read_text().strip()
        self._client = Client(self.api_url, token=self.token)
        log(f"fissile up ready in {self.startup_seconds:.2f}s (router :{self.port})")

    @property
    def client(self) -> Any:
        assert self._client is not None, "platform not started"
        return self._client

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> dict[str, Any]:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is not None:
            self.stop_report = stop_process(self.proc, "fissile up")
            self.proc = None
            if self.stop_report.get("killed") or self.stop_report["exit_code"] != 0:
                self.stop_report["log_tail"] = self.log_tail()
                log(f"fissile up did not stop cleanly; its log ends:\n{self.log_tail()}")
            log(
                f"fissile up stopped in {self.stop_report['stop_seconds']}s"
                f" (exit {self.stop_report['exit_code']})"
            )
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.stop_report or {}

    def __enter__(self) -> Platform:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- resources ------------------------------------------------------------------------

    def create_function(
        self,
        name: str,
        source: str,
        filename: str = "hello.py",
        route: str | None = None,
        **settings: Any,
    ) -> dict[str, float]:
        """Upload ``source`` as a package, wait for its build, create the function (and a
        route); the same API calls ``fissile fn create --code`` makes. Returns timings (ms)."""
        client = self.client
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        sha = client.upload_archive(zip_source(filename, source))["sha256"]
        t1 = time.perf_counter()
        package = f"{name}-pkg"
        client.create("packages", {"name": package, "env": "python", "source": sha})
        built = self.wait_for_build(package)
        if built["status"]["state"] != "succeeded":
            raise RuntimeError(f"package {package} failed to build: {built['status']['log']}")
        t2 = time.perf_counter()
        client.create("functions", {"name": name, "env": "python", "package": package, **settings})
        t3 = time.perf_counter()
        timings.update(
            upload_ms=(t1 - t0) * 1000,
            package_build_ms=(t2 - t1) * 1000,
            function_create_ms=(t3 - t2) * 1000,
        )
        if route is not None:
            client.create("httptriggers", {"name": f"{name}-route", "function": name, "url": route})
            timings["route_create_ms"] = (time.perf_counter() - t3) * 1000
        timings["total_ms"] = (time.perf_counter() - t0) * 1000
        return timings

    def wait_for_build(self, package: str, timeout: float = 120.0) -> dict[str, Any]:
        """Poll every 2 ms (the client's own wait starts at 50 ms, which would hide the
        build's real duration)."""
        deadline = time.monotonic() + timeout
        while True:
            built: dict[str, Any] = self.client.get("packages", package)
            if built["status"]["state"] in ("succeeded", "failed"):
                return built
            if time.monotonic() > deadline:
                raise TimeoutError(f"package {package} still building after {timeout}s")
            time.sleep(0.002)

    def delete_function(self, name: str) -> None:
        client = self.client
        for trigger in client.list("httptriggers"):
            if trigger["function"] == name:
                client.delete("httptriggers", trigger["name"])
        client.delete("functions", name)
        client.delete("packages", f"{name}-pkg")

    def instances(self) -> list[dict[str, Any]]:
        """The instance processes (``fi-*``) this platform runs, with their unix socket paths."""
        assert self.proc is not None
        sockets = _unix_listeners()
        found = []
        for pid, _ in descendants(self.proc.pid):
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if not name.startswith("fi-"):
                continue
            paths = []
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    match = re.fullmatch(r"socket:\[(\d+)\]", target)
                    if match and match.group(1) in sockets:
                        paths.append(sockets[match.group(1)])
            except OSError:
                continue
            found.append({"pid": pid, "name": name, "sockets": paths})
        return found


def _unix_listeners() -> dict[str, str]:
    """inode -> path of listening unix sockets (from /proc/net/unix)."""
    found: dict[str, str] = {}
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        # Num RefCount Protocol Flags Type St Inode [Path]; Flags 00010000 = __SO_ACCEPTCON
        if len(fields) >= 8 and int(fields[3], 16) & 0x10000:
            found[fields[6]] = fields[7]
    return found


def zip_source(filename: str, source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo(filename, date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        archive.writestr(info, source)
    return buffer.getvalue()


class Workdir:
    """A temporary directory removed at the end (unless FISSILE_BENCH_KEEP is set)."""

    def __init__(self, prefix: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=prefix))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        if os.environ.get("FISSILE_BENCH_KEEP"):
            log(f"kept {self.path}")
        else:
            shutil.rmtree(self.path, ignore_errors=True)


# -- wrk ----------------------------------------------------------------------------------

# Printed by wrk's done() hook: exact percentiles from wrk's histogram, errors, totals.
WRK_SCRIPT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.2f,"stdev":%.2f,"max":%d,' ..
    '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p99_9":%d}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version(wrk: str) -> str | None:
    try:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0] if first else None


def run_wrk(
    wrk: str,
    url: str,
    threads: int,
    connections: int,
    duration: float,
    workdir: Path,
    lua: str = WRK_SCRIPT,
) -> dict[str, Any]:
    """``lua`` must end with WRK_SCRIPT (its done() prints the report this parses)."""
    script = workdir / "report.lua"
    script.write_text(lua)
    seconds = max(1, round(duration))
    command = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    report = None
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            report = json.loads(line[len("WRK_JSON ") :])
    if report is None:
        raise RuntimeError(f"no report in wrk's output:\n{out.stdout}")
    lat = report["latency_us"]
    seconds_run = report["duration_us"] / 1e6
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    return {
        "tool": "wrk",
        "threads": threads,
        "connections": connections,
        "duration_s": round(seconds_run, 3),
        "requests": report["requests"],
        "requests_per_s": round(report["requests"] / seconds_run, 1),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "errors": report["errors"],
        "latency_ms": {
            key: round(lat[key] / 1000, 3)
            for key in ("min", "mean", "stdev", "p50", "p75", "p90", "p99", "p99_9", "max")
        },
    }


def run_pyload(
    port: int, path: str, connections: int, duration: float
) -> dict[str, Any]:  # pragma: no cover - only when wrk is missing
    """Fallback load generator: ``connections`` asyncio keep-alive clients in one process.

    Much weaker than wrk (one Python process on the same cores): its numbers are a floor.
    """
    import asyncio

    latencies: list[float] = []
    errors = 0
    non_2xx = 0
    raw = get_request(path)

    async def client(stop_at: float) -> None:
        nonlocal errors, non_2xx
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            errors += 1
            return
        try:
            while time.perf_counter() < stop_at:
                begin = time.perf_counter()
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                latencies.append((time.perf_counter() - begin) * 1000)
                if not head.startswith(b"HTTP/1.1 2"):
                    non_2xx += 1
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
        finally:
            writer.close()

    async def main() -> float:
        begin = time.perf_counter()
        stop_at = begin + duration
        await asyncio.gather(*(client(stop_at) for _ in range(connections)))
        return time.perf_counter() - begin

    elapsed = asyncio.run(main())
    return {
        "tool": "python-asyncio (wrk missing)",
        "threads": 1,
        "connections": connections,
        "duration_s": round(elapsed, 3),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "non_2xx": non_2xx,
        "errors": {"other": errors},
        "latency_ms": summarize(latencies),
    }
