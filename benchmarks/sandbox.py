"""Sandbox: what the isolation of each instance costs a cold start, and whether it keeps a
healthy function's latency steady while a neighbour misbehaves.

1. **Cold start, fork alone vs fork + full sandbox.** Two platforms, ``--sandbox off`` and
   ``--sandbox strict``, each with an environment of ``--poolsize 0`` (no warm pool: every first
   request forks an instance from the zygote and, under strict, builds its sandbox). N new
   functions per platform; the first request to each is timed from the client on a new TCP
   connection (creating the function is not part of it). The same on the strict platform's
   default ``python`` environment (warm pool of 3) shows how much of it the pool hides.
2. **Builds, unsandboxed vs sandboxed.** The same small ``pip install`` build (a
   ``requirements.txt`` naming a local library with a dependency-free PEP 517 backend, so pip
   needs no network: the platforms run with ``PIP_NO_INDEX=1``) on both platforms, interleaved,
   each build with its own source; its duration is the build's own ``started_at`` to
   ``finished_at``. ``--only builds`` runs just this part and updates the ``builds`` entry of the
   results file, leaving the rest as it was.
3. **Noisy neighbours.** On the strict platform a healthy hello is called sequentially on one
   keep-alive connection: on a quiet platform, while a neighbour crash-loops (segfaults on every
   request), and while neighbours burn CPU, with and without a ``--cpu 0.5`` quota. Each p99 is
   reported as a ratio to the quiet p99.

    .venv/bin/python benchmarks/sandbox.py [--functions 40] [--requests 1500] [--builds 12]
    .venv/bin/python benchmarks/sandbox.py --only builds

Prints JSON and writes it to benchmarks/results/sandbox.json.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    PYTHON,
    RESULTS,
    CpuMeter,
    Platform,
    RawHTTP,
    Workdir,
    _without_local_paths,
    get_request,
    http_get,
    log,
    machine_info,
    ratio,
    summarize,
    wait_until_quiet,
    write_results,
    zip_source,
)

TARGET_SANDBOX_P50_MS = 5.0  # full sandbox adds at most this much to a cold start (p50)
TARGET_NEIGHBOUR_P99_RATIO = 2.0  # a neighbour's misbehaviour at most doubles the p99

HELLO = 'def main():\n    return "Hello, world!"\n'
HELLO_BODY = b"Hello, world!"
CRASH = """\
import ctypes


def main():
    ctypes.string_at(0)  # SIGSEGV
    return "unreachable"
"""
# CPU time, not wall time: every request costs the same CPU whether or not a quota slows it
# down, so "with --cpu" and "without" ask the machine for the same work.
BURN = """\
import time


def main():
    end = time.process_time() + {seconds}
    n = 0
    while time.process_time() < end:
        n += 1
    return str(n)
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--functions", type=int, default=40, help="new functions per cold-start series"
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=0.3,
        help="seconds between cold starts (lets the warm pool refill and the platform settle)",
    )
    parser.add_argument(
        "--phase-seconds",
        type=float,
        default=3.0,
        help="seconds the healthy function is measured in each neighbour phase",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=1500,
        help="...and at least this many requests (for at most 3 x --phase-seconds)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the neighbour phases")
    parser.add_argument(
        "--budget",
        type=float,
        default=230.0,
        help="seconds; disturbed neighbour phases are not measured again past budget - 30 s",
    )
    parser.add_argument(
        "--burn-threads", type=int, default=2, help="concurrent callers of the CPU burner"
    )
    parser.add_argument("--burn-ms", type=float, default=200.0, help="CPU ms per burner request")
    parser.add_argument("--burn-cpu", type=float, default=0.5, help="--cpu of the capped burner")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="seconds a neighbour runs before the measurement starts",
    )
    parser.add_argument(
        "--disturbed-pct",
        type=float,
        default=15.0,
        help="a phase during which other processes used more than this %% of the CPUs is"
        " repeated (once)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=5.0,
        help="before each series, round and repeated phase, wait up to this many seconds for"
        " other processes to use < 10%% of the CPUs (0: don't wait)",
    )
    parser.add_argument("--builds", type=int, default=12, help="pip builds per platform")
    parser.add_argument(
        "--only",
        choices=("all", "builds"),
        default="all",
        help="builds: only the build series, written into the results file's builds entry",
    )
    parser.add_argument("--output", default=None, help="default: benchmarks/results/sandbox.json")
    parser.add_argument("--neighbour", nargs=2, metavar=("PORT", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--neighbour-threads", type=int, default=1, help=argparse.SUPPRESS)
    return parser.parse_args()


# -- a platform with a sandbox mode and the API token ---------------------------------------


class SandboxPlatform(Platform):
    """``fissile up --sandbox MODE``; the API client carries the platform's bearer token."""

    def __init__(self, workdir: Path, sandbox: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir, ("--sandbox", sandbox))
        self.sandbox = sandbox
        self.info: dict[str, Any] = {}

    def start(self, timeout: float = 60.0) -> None:
        super().start(timeout)
        self.info = self.client.info()
        log(f"  (that was fissile up --sandbox {self.sandbox})")

    def create_environment(self, name: str, poolsize: int, timeout: float = 30.0) -> None:
        self.client.create("environments", {"name": name, "image": "python", "poolsize": poolsize})
        # Its zygote starts in the background; a hello on it answering means it is up.
        self.wait_ready(name)

    def wait_ready(self, env: str, timeout: float = 30.0) -> None:
        name = f"ready-{env}-{secrets.token_hex(2)}"
        self.create_fn(name, HELLO, env)
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, _ = http_get(self.port, f"/function/{name}", timeout=timeout)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"environment {env} not ready after {timeout}s")
            time.sleep(0.05)
        self.delete_fn(name)

    def create_fn(self, name: str, source: str, env: str = "python", **settings: Any) -> None:
        """Upload ``source`` as a package of ``env``, wait for its build, create the function
        (what ``fissile fn create --code`` does)."""
        client = self.client
        sha = client.upload_archive(zip_source("hello.py", source))["sha256"]
        package = f"{name}-pkg"
        client.create("packages", {"name": package, "env": env, "source": sha})
        built = self.wait_for_build(package)
        if built["status"]["state"] != "succeeded":
            raise RuntimeError(f"package {package} failed to build: {built['status']['log']}")
        client.create("functions", {"name": name, "env": env, "package": package, **settings})

    def delete_fn(self, name: str) -> None:
        self.client.delete("functions", name)
        self.client.delete("packages", f"{name}-pkg")

    def fn_status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.client.get("functions", name)["status"]
        return status


# -- 1. cold starts ----------------------------------------------------------------------------


def first_request(port: int, name: str) -> float:
    """ms from opening a new TCP connection to the full answer of the first request."""
    begin = time.perf_counter()
    client = RawHTTP.tcp(port)
    try:
        status, body = client.request(get_request(f"/function/{name}"))
    finally:
        client.close()
    elapsed = (time.perf_counter() - begin) * 1000
    if status != 200 or body != HELLO_BODY:
        raise RuntimeError(f"first request to {name}: HTTP {status} {body[:300]!r}")
    return elapsed


def bench_cold(
    args: argparse.Namespace, off: SandboxPlatform, strict: SandboxPlatform
) -> dict[str, Any]:
    """Interleaved: each round creates one new function per series and times its first
    request, so every series sees the same background load."""
    series: dict[str, tuple[SandboxPlatform, str]] = {
        "off_pool0": (off, "nopool"),
        "strict_pool0": (strict, "nopool"),
        "off_pool3": (off, "python"),
        "strict_pool3": (strict, "python"),
    }
    samples: dict[str, list[float]] = {key: [] for key in series}
    run_id = secrets.token_hex(2)
    for i in range(args.functions):
        for key, (platform, env) in series.items():
            name = f"c{run_id}-{key.replace('_', '-')}-{i}"
            platform.create_fn(name, f"# {name}\n{HELLO}", env)
            samples[key].append(first_request(platform.port, name))
            platform.delete_fn(name)
            time.sleep(args.pause)
        if (i + 1) % 10 == 0 or i + 1 == args.functions:
            log(
                f"cold starts {i + 1}/{args.functions}: p50 "
                + ", ".join(f"{key} {summarize(s)['p50']:.2f}" for key, s in samples.items())
                + " ms"
            )
    stats = {key: summarize(s) for key, s in samples.items()}

    def diff(a: str, b: str, stat: str) -> float:
        return round(stats[a][stat] - stats[b][stat], 3)

    return {
        "first_request_ms": stats,
        "sandbox_cost_ms": {
            "p50_strict_minus_off": diff("strict_pool0", "off_pool0", "p50"),
            "p99_strict_minus_off": diff("strict_pool0", "off_pool0", "p99"),
            "mean_strict_minus_off": diff("strict_pool0", "off_pool0", "mean"),
        },
        "with_warm_pool_ms": {
            "p50_strict_pool3_minus_off_pool0": diff("strict_pool3", "off_pool0", "p50"),
            "p50_strict_pool0_minus_strict_pool3": diff("strict_pool0", "strict_pool3", "p50"),
            "p50_strict_pool3_minus_off_pool3": diff("strict_pool3", "off_pool3", "p50"),
            "p99_strict_pool3_minus_off_pool3": diff("strict_pool3", "off_pool3", "p99"),
            "p50_off_pool0_minus_off_pool3": diff("off_pool0", "off_pool3", "p50"),
        },
        "ratios": {
            "strict_pool0_p50_over_off_pool0_p50": ratio(
                stats["strict_pool0"]["p50"], stats["off_pool0"]["p50"]
            ),
            "strict_pool0_p99_over_off_pool0_p99": ratio(
                stats["strict_pool0"]["p99"], stats["off_pool0"]["p99"]
            ),
            "strict_pool3_p50_over_strict_pool0_p50": ratio(
                stats["strict_pool3"]["p50"], stats["strict_pool0"]["p50"]
            ),
            "strict_pool3_p50_over_off_pool3_p50": ratio(
                stats["strict_pool3"]["p50"], stats["off_pool3"]["p50"]
            ),
        },
        "samples_ms": {key: [round(ms, 3) for ms in s] for key, s in samples.items()},
    }


# -- 2. builds ---------------------------------------------------------------------------------

# A local library built by pip through a PEP 517 backend without build requirements: the
# build needs no network, and what is measured is pip and the sandbox around it.
LIB_BACKEND = """\
import base64, hashlib, os, zipfile

def _digest(data):
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "benchlib", "__init__.py"), "rb") as handle:
        files = {"benchlib/__init__.py": handle.read()}
    info = "benchlib-1.0.dist-info"
    files[info + "/METADATA"] = b"Metadata-Version: 2.1\\nName: benchlib\\nVersion: 1.0\\n"
    files[info + "/WHEEL"] = (
        b"Wheel-Version: 1.0\\nGenerator: bench\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    )
    lines = [f"{p},sha256={_digest(d)},{len(d)}" for p, d in files.items()]
    files[info + "/RECORD"] = ("\\n".join(lines + [info + "/RECORD,,"]) + "\\n").encode()
    name = "benchlib-1.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return name
"""
LIB_PYPROJECT = """\
[build-system]
requires = []
build-backend = "bench_backend"
backend-path = ["."]

[project]
name = "benchlib"
version = "1.0"
"""


def pip_source(tag: str) -> bytes:
    """A source archive whose build is ``pip install -r requirements.txt`` of a local library;
    ``tag`` makes each one a new build (never a reuse of an earlier result)."""
    files = {
        "handler.py": f"# {tag}\nimport benchlib\n\ndef main():\n    return benchlib.VALUE\n",
        "requirements.txt": "./lib\n",
        "lib/pyproject.toml": LIB_PYPROJECT,
        "lib/bench_backend.py": LIB_BACKEND,
        "lib/benchlib/__init__.py": "VALUE = 'built'\n",
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, text in files.items():
            info = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, text)
    return buffer.getvalue()


def timed_build(platform: SandboxPlatform, name: str) -> tuple[float, float]:
    """Build a new pip package; (ms the build took by its own status, ms the client waited)."""
    client = platform.client
    sha = client.upload_archive(pip_source(name))["sha256"]
    begin = time.perf_counter()
    client.create("packages", {"name": name, "env": "python", "source": sha})
    built = platform.wait_for_build(name)
    waited = (time.perf_counter() - begin) * 1000
    status = built["status"]
    if status["state"] != "succeeded":
        raise RuntimeError(f"build {name} failed on --sandbox {platform.sandbox}: {status['log']}")
    started = datetime.datetime.fromisoformat(status["started_at"])
    finished = datetime.datetime.fromisoformat(status["finished_at"])
    client.delete("packages", name)
    return (finished - started).total_seconds() * 1000, waited


def bench_builds(
    args: argparse.Namespace, off: SandboxPlatform, strict: SandboxPlatform
) -> dict[str, Any]:
    series = {"off": off, "strict": strict}
    took: dict[str, list[float]] = {key: [] for key in series}
    waited: dict[str, list[float]] = {key: [] for key in series}
    run_id = secrets.token_hex(2)
    timed_build(off, f"warm-{run_id}-off")  # pip's first import from disk, outside the series
    timed_build(strict, f"warm-{run_id}-strict")
    for i in range(args.builds):
        for key, platform in series.items():
            build_ms, wait_ms = timed_build(platform, f"b{run_id}-{key}-{i}")
            took[key].append(build_ms)
            waited[key].append(wait_ms)
        log(
            f"builds {i + 1}/{args.builds}: "
            + ", ".join(
                f"{key} {build_ms:.0f} ms" for key, build_ms in ((k, took[k][-1]) for k in series)
            )
        )
    stats = {key: summarize(samples) for key, samples in took.items()}
    return {
        "build_ms": stats,
        "client_wait_ms": {key: summarize(samples) for key, samples in waited.items()},
        "sandbox_cost_ms": {
            "p50_strict_minus_off": round(stats["strict"]["p50"] - stats["off"]["p50"], 3),
            "mean_strict_minus_off": round(stats["strict"]["mean"] - stats["off"]["mean"], 3),
        },
        "strict_p50_over_off_p50": ratio(stats["strict"]["p50"], stats["off"]["p50"]),
        "samples_ms": {key: [round(ms, 3) for ms in samples] for key, samples in took.items()},
        "notes": [
            "One build = pip install -r requirements.txt --target $DEPLOY_PKG of a local library"
            " (./lib, a PEP 517 backend without build requirements, so pip builds a wheel in an"
            " isolated environment without fetching anything: PIP_NO_INDEX=1), then the source"
            " copied in; each build has its own source, so none is a reuse.",
            "build_ms = the build's own started_at to finished_at (extracting the archive,"
            " the build, fixing modes, publishing); client_wait_ms adds the API calls and the"
            " client's 2 ms polling.",
            "off = fissile up --sandbox off: pip runs directly as the platform's user. strict ="
            " the build sandbox: a cgroup, the helper process (a fresh Python interpreter),"
            " PID/mount/IPC/UTS namespaces, a private root with the source on an overlay, the"
            " build uid, seccomp. The two platforms run side by side, the series interleaved.",
        ],
    }


# -- 3. noisy neighbours -----------------------------------------------------------------------


def neighbour_main(port: int, path: str, threads: int) -> None:
    """The load of a noisy neighbour, in a process of its own (so that its Python does not
    compete with the measuring client for one GIL): ``threads`` callers of ``path``, each
    sending the next request as soon as the last is answered, until stdin closes. Prints the
    count of answers per status as JSON."""
    stop = threading.Event()
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def caller() -> None:
        raw = get_request(path)
        client: RawHTTP | None = None
        while not stop.is_set():
            try:
                if client is None:
                    client = RawHTTP.tcp(port, timeout=60)
                status, _ = client.request(raw)
                key = str(status)
            except OSError as exc:
                key = type(exc).__name__
                if client is not None:
                    client.close()
                client = None
                time.sleep(0.01)
            with lock:
                counts[key] = counts.get(key, 0) + 1
        if client is not None:
            client.close()

    workers = [threading.Thread(target=caller) for _ in range(threads)]
    for worker in workers:
        worker.start()
    sys.stdin.read()  # until the benchmark closes our stdin
    stop.set()
    for worker in workers:
        worker.join()
    print(json.dumps(counts), flush=True)


class Neighbour:
    """A neighbour load process (this file with ``--neighbour``), started and stopped by us."""

    def __init__(self, port: int, name: str, threads: int) -> None:
        self.proc = subprocess.Popen(
            [
                PYTHON,
                __file__,
                "--neighbour",
                str(port),
                f"/function/{name}",
                "--neighbour-threads",
                str(threads),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.started = time.monotonic()

    def stop(self) -> dict[str, Any]:
        try:
            out, _ = self.proc.communicate(b"", timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by pid
            self.proc.wait()
            raise
        seconds = time.monotonic() - self.started
        if self.proc.returncode != 0:
            raise RuntimeError(f"neighbour load exited with {self.proc.returncode}")
        counts: dict[str, int] = json.loads(out)
        total = sum(counts.values())
        return {
            "answers": dict(sorted(counts.items())),
            "requests": total,
            "seconds": round(seconds, 2),
            "requests_per_s": round(total / seconds, 1),
        }


def measure(port: int, name: str, seconds: float, min_requests: int) -> list[float]:
    """Sequential GETs on one keep-alive connection for ``seconds`` (and at least
    ``min_requests``, within 3 x ``seconds``); ms of each."""
    raw = get_request(f"/function/{name}")
    client = RawHTTP.tcp(port)
    latencies: list[float] = []
    try:
        client.request(raw)  # connect and one request outside the measurement
        start = time.monotonic()
        while True:
            begin = time.perf_counter()
            status, body = client.request(raw)
            latencies.append((time.perf_counter() - begin) * 1000)
            if status != 200 or body != HELLO_BODY:
                raise RuntimeError(f"healthy function answered HTTP {status} {body[:300]!r}")
            elapsed = time.monotonic() - start
            if elapsed >= seconds and (len(latencies) >= min_requests or elapsed >= 3 * seconds):
                break
    finally:
        client.close()
    return latencies


PHASES = ("quiet", "crash_loop", "cpu_burn_capped", "cpu_burn_uncapped")


def run_phase(
    args: argparse.Namespace, platform: SandboxPlatform, phase: str, tag: str
) -> dict[str, Any]:
    """One measurement of the healthy function, with the neighbour of ``phase`` running."""
    neighbour_fn: str | None = None
    neighbour: Neighbour | None = None
    settings: dict[str, Any] = {}
    if phase == "crash_loop":
        # A new function each time: the back-off of an old one would still be running.
        neighbour_fn = f"crash-{tag}"
        platform.create_fn(neighbour_fn, CRASH)
        threads = 1
    elif phase.startswith("cpu_burn"):
        neighbour_fn = f"burn-{tag}"
        if phase == "cpu_burn_capped":
            settings["cpu"] = args.burn_cpu
        platform.create_fn(neighbour_fn, BURN.format(seconds=args.burn_ms / 1000), **settings)
        threads = args.burn_threads
    record: dict[str, Any] = {"phase": phase, "loadavg_before": list(os.getloadavg())}
    meter = CpuMeter()
    try:
        if neighbour_fn is not None:
            neighbour = Neighbour(platform.port, neighbour_fn, threads)
            time.sleep(args.settle)
        meter.start()
        latencies = measure(platform.port, "healthy", args.phase_seconds, args.requests)
        record["cpu"] = meter.stop()
    finally:
        if neighbour is not None:
            record["neighbour"] = neighbour.stop()
    record["latency_ms"] = {**summarize(latencies), **tail(latencies)}
    record["samples"] = latencies
    if neighbour_fn is not None:
        status = platform.fn_status(neighbour_fn)
        record["neighbour"].update(
            function=neighbour_fn,
            settings=settings,
            callers=threads,
            restarts=status.get("restarts"),
            failures_in_a_row=status.get("failures_in_a_row"),
            last_exit_reason=status.get("last_exit_reason"),
        )
        platform.delete_fn(neighbour_fn)
    healthy = platform.fn_status("healthy")
    record["healthy_restarts"] = healthy.get("restarts")
    lat = record["latency_ms"]
    log(
        f"  {phase:18s} n={lat['n']} p50 {lat['p50']:.3f} ms p99 {lat['p99']:.3f} ms"
        f" (other processes {record['cpu']['other_processes_pct']}% of the CPUs)"
        + (f"; neighbour {record['neighbour']['answers']}" if neighbour_fn else "")
    )
    return record


def tail(samples: list[float]) -> dict[str, int]:
    """How many requests took longer than 2, 5 and 10 ms (the stalls behind a p99)."""
    return {f"over_{ms}ms": sum(1 for x in samples if x > ms) for ms in (2, 5, 10)}


def bench_neighbours(
    args: argparse.Namespace, platform: SandboxPlatform, deadline: float
) -> dict[str, Any]:
    platform.create_fn("healthy", HELLO)
    measure(platform.port, "healthy", 0.5, 200)  # warm up the instance and the router path
    rounds: list[list[dict[str, Any]]] = []
    notes: list[str] = []
    for r in range(args.rounds):
        if args.quiet_wait > 0:
            wait_until_quiet(args.quiet_wait)
        log(f"neighbour round {r + 1}/{args.rounds}")
        results = []
        for phase in PHASES:
            record = run_phase(args, platform, phase, f"{r}")
            other = record["cpu"]["other_processes_pct"]
            if other > args.disturbed_pct and time.monotonic() > deadline:
                notes.append(
                    f"round {r + 1}, {phase}: other processes used {other}% of the CPUs;"
                    " not measured again (time budget spent)"
                )
            elif other > args.disturbed_pct:
                log(f"  {phase} disturbed ({other}% used by other processes): once more")
                if args.quiet_wait > 0:
                    wait_until_quiet(min(args.quiet_wait, 3.0))
                again = run_phase(args, platform, phase, f"{r}r")
                again_other = again["cpu"]["other_processes_pct"]
                kept, dropped = (again, record) if again_other < other else (record, again)
                notes.append(
                    f"round {r + 1}, {phase}: other processes used {other}% of the CPUs;"
                    f" measured again ({again_other}%), kept the run with less"
                )
                kept["repeated"] = {
                    "other_processes_pct": [other, again_other],
                    "dropped_latency_ms": dropped["latency_ms"],
                }
                record = kept
            results.append(record)
        rounds.append(results)

    pooled: dict[str, list[float]] = {phase: [] for phase in PHASES}
    for results in rounds:
        for record in results:
            pooled[record["phase"]].extend(record.pop("samples"))
    stats = {phase: {**summarize(s), **tail(s)} for phase, s in pooled.items()}
    quiet = stats["quiet"]
    ratios: dict[str, Any] = {}
    for phase in PHASES[1:]:
        ratios[f"{phase}_p99_over_quiet_p99"] = ratio(stats[phase]["p99"], quiet["p99"])
    for phase in PHASES[1:]:
        ratios[f"{phase}_p50_over_quiet_p50"] = ratio(stats[phase]["p50"], quiet["p50"])
    per_round = []
    for results in rounds:
        by_phase = {record["phase"]: record for record in results}
        q = by_phase["quiet"]["latency_ms"]["p99"]
        per_round.append(
            {
                phase: {
                    "p50": record["latency_ms"]["p50"],
                    "p99": record["latency_ms"]["p99"],
                    "p99_over_this_round_quiet_p99": ratio(record["latency_ms"]["p99"], q),
                    "other_processes_pct": record["cpu"]["other_processes_pct"],
                }
                for phase, record in by_phase.items()
            }
        )
    for phase in PHASES[1:]:
        within = sorted(
            rnd[phase]["p99_over_this_round_quiet_p99"]
            for rnd in per_round
            if rnd[phase]["p99_over_this_round_quiet_p99"] is not None
        )
        ratios[f"{phase}_p99_over_quiet_p99_median_of_rounds"] = (
            round(within[len(within) // 2], 3)
            if len(within) % 2
            else round((within[len(within) // 2 - 1] + within[len(within) // 2]) / 2, 3)
        )
    # The round in which other processes took the least CPU (its busiest phase counts).
    calmest = min(
        range(len(per_round)),
        key=lambda i: max(p["other_processes_pct"] for p in per_round[i].values()),
    )
    return {
        "healthy_latency_ms": stats,
        "ratios": ratios,
        "least_disturbed_round": {
            "round": calmest + 1,
            "other_processes_pct_at_most": max(
                p["other_processes_pct"] for p in per_round[calmest].values()
            ),
            **{
                f"{phase}_p99_over_quiet_p99": per_round[calmest][phase][
                    "p99_over_this_round_quiet_p99"
                ]
                for phase in PHASES[1:]
            },
        },
        "per_round": per_round,
        "phases": rounds,
        "notes": notes,
    }


def main_builds(args: argparse.Namespace) -> None:
    """``--only builds``: the build series alone, into the ``builds`` entry of the results."""
    path = Path(args.output) if args.output else RESULTS / "sandbox.json"
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    result.setdefault("benchmark", "sandbox")
    with Workdir("fissile-bench-sandbox-builds-") as workdir:
        off = SandboxPlatform(workdir / "off", "off")
        strict = SandboxPlatform(workdir / "strict", "strict")
        try:
            off.start()
            strict.start()
            if args.quiet_wait > 0:
                wait_until_quiet(args.quiet_wait)
            log(f"builds: {args.builds} pip builds per platform, interleaved")
            meter = CpuMeter().start()
            builds = bench_builds(args, off, strict)
            builds["cpu"] = meter.stop()
        finally:
            off.stop()
            strict.stop()
    builds["machine"] = machine_info()
    builds["machine"]["loadavg_at_end"] = list(os.getloadavg())
    builds["parameters"] = {"builds": args.builds, "run": "--only builds"}
    result["builds"] = builds
    # Not write_results: it would stamp the earlier full run's machine record with this end.
    text = _without_local_paths(json.dumps(result, indent=2))
    path.write_text(text + "\n")
    print(json.dumps(builds, indent=2), flush=True)
    log(f"results written to {path}")


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    if args.neighbour:
        neighbour_main(int(args.neighbour[0]), args.neighbour[1], args.neighbour_threads)
        return
    started = time.monotonic()
    params = {k: v for k, v in vars(args).items() if not k.startswith("neighbour")}
    result: dict[str, Any] = {
        "benchmark": "sandbox",
        "machine": machine_info(),
        "parameters": {
            **params,
            "hello": HELLO,
            "crash": CRASH,
            "burn": BURN.format(seconds=args.burn_ms / 1000),
            "cold_start_url": "http://127.0.0.1:<router>/function/<name> (new TCP connection)",
        },
    }
    # Builds must not need the network (the build series installs a local library only).
    os.environ.setdefault("PIP_NO_INDEX", "1")
    if args.only == "builds":
        main_builds(args)
        return
    with Workdir("fissile-bench-sandbox-") as workdir:
        off = SandboxPlatform(workdir / "off", "off")
        strict = SandboxPlatform(workdir / "strict", "strict")
        try:
            off.start()
            strict.start()
            for platform in (off, strict):
                platform.create_environment("nopool", poolsize=0)
                platform.wait_ready("python")
            result["platforms"] = {
                p.sandbox: {
                    "startup_s": p.startup_seconds,
                    "sandbox_active": p.info.get("sandbox_active"),
                    "sandbox_mode": p.info.get("sandbox_mode"),
                }
                for p in (off, strict)
            }
            if args.quiet_wait > 0:
                result["quiet_wait_cold"] = wait_until_quiet(args.quiet_wait)
            log(
                f"cold starts: {args.functions} new functions per series"
                " (off and strict, each with poolsize 0 and 3), interleaved"
            )
            meter = CpuMeter().start()
            loadavg = list(os.getloadavg())
            cold = bench_cold(args, off, strict)
            cold["cpu"] = meter.stop()
            cold["loadavg_before"] = loadavg
            log(f"builds: {args.builds} pip builds per platform, interleaved")
            meter = CpuMeter().start()
            builds = bench_builds(args, off, strict)
            builds["cpu"] = meter.stop()
            result["builds"] = builds
            result["platforms"]["off"]["stop"] = off.stop()
            log("noisy neighbours on the strict platform")
            neighbours = bench_neighbours(args, strict, started + args.budget - 30)
        finally:
            off.stop()
            result.setdefault("platforms", {}).setdefault("strict", {})["stop"] = strict.stop()

    p50_cost = cold["sandbox_cost_ms"]["p50_strict_minus_off"]
    worst = max(
        v for k, v in neighbours["ratios"].items() if k.endswith("_p99_over_quiet_p99") and v
    )
    notes = neighbours.pop("notes")
    result.update(
        cold_start=cold,
        neighbours=neighbours,
        target={
            "sandbox_adds_at_most_ms_p50": TARGET_SANDBOX_P50_MS,
            "sandbox_adds_ms_p50": p50_cost,
            "sandbox_met": p50_cost <= TARGET_SANDBOX_P50_MS,
            "neighbour_p99_ratio_at_most": TARGET_NEIGHBOUR_P99_RATIO,
            "neighbour_worst_p99_ratio": worst,
            "neighbour_met": worst <= TARGET_NEIGHBOUR_P99_RATIO,
        },
        notes=[
            f"{os.cpu_count()} CPUs, nothing pinned: the client, both platforms (router, control"
            " API and executor in one process each), zygotes, instances and the neighbour load"
            " share them, and other work on the machine too (see cpu.other_processes_pct and the"
            " load averages).",
            "Cold start = a new TCP connection + the first GET /function/<name>, timed by the"
            " client once the create API calls have returned. Each function has its own source"
            " (its own package and deploy dir) and is deleted after its first request.",
            "The off and strict platforms run side by side and the four series are interleaved"
            " (one function of each per round), so all see the same background load. pool0 ="
            " an environment with --poolsize 0: the request waits for fork + (strict) the"
            " sandbox at fork (namespaces, private root, cgroup) + specialization (package"
            " bind-mount, uid drop, seccomp) + import. pool3 = the default python environment"
            " (warm pool of 3): the fork and the fork-time sandbox are done ahead.",
            f"A pause of {args.pause:g}s follows each cold start, so the warm pool can refill"
            " (it refills in the background as soon as an instance is taken) and the deleted"
            " function's instance can exit before the next measurement.",
            "sandbox_cost_ms = strict pool0 - off pool0, the sandbox as a user sees it on a cold"
            " start (target: p50 <= 5 ms). with_warm_pool_ms.p50_strict_pool3_minus_off_pool3 is"
            " what the pool does not hide.",
            "Neighbours: the healthy hello (default python env, strict platform) is called"
            " sequentially on one keep-alive connection for --phase-seconds (and at least"
            " --requests requests); p50/p99 pooled over the rounds, each p99 divided by the quiet"
            " p99 (target: <= 2). per_round compares each phase with the quiet run of its own"
            " round.",
            "The neighbour load runs in a separate process (this file with --neighbour): its"
            " callers, one thread each, send the next request as soon as the last is answered;"
            " in the measuring process they would compete with the measurement for the GIL.",
            "crash_loop: a new function per phase that segfaults (ctypes.string_at(0)) on every"
            " request. 502 = an instance died answering; 503 = fissile's crash-loop back-off"
            " (after 3 failures in a row, starts are spaced 0.5 s, 1 s, 2 s...) answering at"
            " once, so most of the neighbour's requests are fast 503s from the router.",
            f"cpu_burn: {args.burn_threads} callers of a function burning {args.burn_ms:g} ms of"
            " CPU time (time.process_time, not wall time) per request; capped = created with"
            f" --cpu {args.burn_cpu:g} (its cgroup's CFS quota, per instance: with concurrency 1"
            " each caller gets its own instance), uncapped = no --cpu.",
            f"A phase during which other processes used more than {args.disturbed_pct:g}% of"
            " the CPUs is measured once more and the less disturbed run kept; both are in"
            " phases[].repeated and in the notes below.",
            *notes,
        ],
        elapsed_s=round(time.monotonic() - started, 1),
    )
    write_results("sandbox", result, args.output)


if __name__ == "__main__":
    main()
