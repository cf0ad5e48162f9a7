"""The per-request cost of request metrics and the access log on the router's hot path, in
process and deterministic enough to compare builds: the functions a warm request runs with
them on against ``--no-metrics --access-log off``, timed with ``timeit``, in µs, and as a share
of what the router's process spends on a request (measured by ``warm.py --only-cost``; given
here with ``--router-cpu-us``, or read from its results).

Timed per request, as the router runs it (``fissile/router/protocol.py``, ``proxy.py``):

* ``off``: the ``Trip`` (arrival, instance), ``_count`` with metrics off (the duration only),
  ``RouterProtocol._answered`` with the access log off;
* ``on``: the same with the access log on: the trip's endpoint set (as routing sets it) and
  ``_answered`` adding the trip as the request's record, whose access log counts it into the
  function's metrics (``Trip.logged``: ``_count`` only times it);
* ``pack``: per record, what the router does with a chunk of them: count them into the
  metrics and format them as JSON lines in C (or marshal them for a writer process, whose
  unmarshalling and formatting are then ``writer``: not on the hot path, but CPU of the
  machine).

Warm requests under wrk mostly wait a little for an instance (32 connections, 10 instances):
half the trips here were queued (warm, not cold), half were not.

With ``--instructions`` (needs valgrind, ~4 minutes): the instructions the platform's process
executes per request in a real run instead, with them on and off, each platform under
callgrind with wrk's load; the load and the machine's other work change how fast instructions
run, not how many run. Per side: the process's instructions while idle (timers) are measured
first and taken out.

    .venv/bin/python benchmarks/observability_cost.py [--router-cpu-us 115] [--instructions]

Prints JSON and writes it to benchmarks/results/observability_cost.json.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import marshal
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import RESULTS, Platform, Workdir, log, machine_info, run_wrk, write_results, wrk_path

from fissile.observability.access import CHUNK, AccessLog
from fissile.observability.metrics import Metrics
from fissile.router.protocol import RouterProtocol
from fissile.router.proxy import Answer, Trip, _count

OBSERVABILITY_OFF = ("--no-metrics", "--access-log", "off")
ROUTER_CPU_US = 115.0  # the router's process per warm request (docs/observability.md)


class _Instance:
    id = "i3"
    ready_at = 0.0


class _Protocol:
    """What ``RouterProtocol._answered`` reads and calls of the connection: the response
    itself is not written (``_respond`` and ``_next`` do nothing)."""

    def __init__(self, access_log: AccessLog | None, trip: Trip) -> None:
        self.access_log = access_log
        self.trip = trip
        self.keep_alive = True
        self.busy = True

    def _respond(self, *args: Any) -> None:
        pass

    def _next(self) -> None:
        pass


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--router-cpu-us",
        type=float,
        default=None,
        help="the router's CPU per request with metrics and the access log off (default: the"
        f" median of benchmarks/results/warm_cost.json's (or warm.json's) cost runs, else"
        f" {ROUTER_CPU_US})",
    )
    parser.add_argument("--number", type=int, default=20000, help="requests per timing")
    parser.add_argument("--repeat", type=int, default=15, help="timings (the minimum is kept)")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count the platform process's instructions per request under callgrind, on"
        " against off, in a real run with wrk (instead of the in-process timings)",
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="--instructions: seconds per measurement"
    )
    parser.add_argument(
        "--measurements", type=int, default=4, help="--instructions: measurements per side"
    )
    parser.add_argument(
        "--keep-profiles",
        metavar="DIR",
        default=None,
        help="--instructions: keep each side's last measurement's callgrind dump in DIR"
        " (on.callgrind, off.callgrind), to compare by function with callgrind_annotate",
    )
    parser.add_argument("--output", default=None)
    return parser.parse_args()


def instructions(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Instructions per request of the platform's process (callgrind), metrics and access log
    on against off: both platforms up at once, a warm hello at max_scale 4 under wrk (1 thread,
    4 connections: valgrind slows the router ~50x, the instances run natively), measurements
    alternating so that both sides run at the rate the machine allows then (per-request counts
    move with the request rate: the loop's and the access log's per-wake-up work is shared by
    the requests of that wake-up)."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("--instructions needs valgrind (callgrind_control)")
    wrk = wrk_path()
    if wrk is None:
        raise SystemExit("--instructions needs wrk")
    platforms: dict[str, Platform] = {}
    sides: dict[str, Any] = {}
    try:
        for key, extra in (("on", ()), ("off", OBSERVABILITY_OFF)):
            home = workdir / key
            home.mkdir()
            out = home / "callgrind.out"
            prefix = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p")
            platform = platforms[key] = Platform(home, extra, prefix=prefix)
            platform.start(timeout=600)
            platform.create_function(
                "hello", 'def main():\n    return "Hello, world!"\n', route="/hello", max_scale=4
            )
            url = f"http://127.0.0.1:{platform.port}/hello"
            run_wrk(wrk, url, 1, 4, 5, workdir)  # warm: instances up, code translated
            assert platform.proc is not None
            idle, wall, _ = _counted(
                platform.proc.pid, home, functools.partial(time.sleep, args.seconds)
            )
            sides[key] = {
                "extra_args": list(extra),
                "idle_instructions_per_s": round(idle / wall),
                "requests": [],
                "instructions_per_request": [],
            }
        for measurement in range(args.measurements):
            order = list(platforms.items())
            for key, platform in order if measurement % 2 == 0 else order[::-1]:
                assert platform.proc is not None
                url = f"http://127.0.0.1:{platform.port}/hello"
                load = functools.partial(run_wrk, wrk, url, 1, 4, args.seconds, workdir)
                keep = None
                if args.keep_profiles is not None and measurement == args.measurements - 1:
                    keep = Path(args.keep_profiles) / f"{key}.callgrind"
                    keep.parent.mkdir(parents=True, exist_ok=True)
                total, wall, run = _counted(platform.proc.pid, platform.workdir, load, keep)
                side = sides[key]
                n = max(run["requests"], 1)
                side["requests"].append(n)
                idle = side["idle_instructions_per_s"] * wall
                side["instructions_per_request"].append(round((total - idle) / n))
                log(f"{key}: {side['instructions_per_request'][-1]} instructions per request")
    finally:
        for platform in platforms.values():
            if platform.proc is not None:
                platform.stop()
    for side in sides.values():
        side["median"] = statistics.median(side["instructions_per_request"])
    on, off = sides["on"]["median"], sides["off"]["median"]
    return {
        "sides": sides,
        "cost_instructions_per_request": round(on - off),
        "cost_pct": round((on / off - 1) * 100, 2),
    }


def _counted(
    pid: int, home: Path, work: Callable[[], Any], keep: Path | None = None
) -> tuple[int, float, Any]:
    """Instructions callgrind counted in process ``pid`` while ``work()`` ran, the seconds
    that took, and what ``work()`` returned; the dump is moved to ``keep`` if given."""
    subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True, check=True)
    begin = time.monotonic()
    result = work()
    time.sleep(0.5)  # the access log's last batch of the run goes out (its interval: 0.15 s)
    subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, check=True)
    wall = time.monotonic() - begin
    deadline = time.monotonic() + 60
    while True:
        dumps = sorted(home.glob(f"callgrind.out.{pid}.*"), key=lambda path: path.stat().st_mtime)
        if dumps:
            text = dumps[-1].read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith(("summary:", "totals:")):
                    if keep is not None:
                        shutil.move(dumps[-1], keep)
                    else:
                        dumps[-1].unlink()
                    return int(line.split()[1]), wall, result
        if time.monotonic() > deadline:
            raise RuntimeError(f"no callgrind dump of {pid} in {home}")
        time.sleep(0.2)


def router_cpu_us(given: float | None) -> tuple[float, str]:
    if given is not None:
        return given, "--router-cpu-us"
    for name in ("warm_cost.json", "warm.json"):
        try:
            cost = json.loads((RESULTS / name).read_text())["observability_cost"]
            return statistics.median(cost["router_cpu_us_per_request"]["off"]), name
        except (OSError, KeyError, TypeError, ValueError):
            continue
    return ROUTER_CPU_US, "default"


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    metrics_on, metrics_off = Metrics(), Metrics()
    metrics_off.enabled = False
    executor_on: Any = type("Executor", (), {"metrics": metrics_on})()
    executor_off: Any = type("Executor", (), {"metrics": metrics_off})()
    pool_on: Any = type("Pool", (), {"metrics": metrics_on.function("hello"), "name": "hello"})()
    pool_off: Any = type("Pool", (), {"metrics": metrics_off.function("hello"), "name": "hello"})()
    # Nothing packed or written while timing the hot path (packing is timed apart, below).
    access = AccessLog(workdir / "access.log", batch=10**9, max_pending=10**9, chunk=10**9)
    access.invocation_prefix = "5f2c9a1e"
    counted = access.count_into(metrics_on)  # as the router does (its records count)
    instance = _Instance()
    result = Answer(200, "ok", "hello")
    answered = RouterProtocol._answered
    monotonic = time.monotonic
    trace = b"4bf92f3577b34da6a3ce929d0e0e4736"

    def request(executor: Any, pool: Any, log: AccessLog | None) -> None:
        for queued in (False, True):
            trip = Trip(monotonic(), counted and log is not None)
            if log is not None:  # as RouterProtocol._next, once routed
                trip.endpoint = ("hello", "hello-route", "GET", "/hello", "127.0.0.1")
            trip.served(instance, queued)  # type: ignore[arg-type]
            trip.invocation = 42  # encode_forward's, either way
            trip.trace = trace
            _count(executor, pool, trip, 200)
            answered(_Protocol(log, trip), result)  # type: ignore[arg-type]

    def reset() -> None:
        access._pending.clear()
        access._tallied = access._folded = 0
        if access._journal is not None:  # its lines and counts let go
            access._journal.take()
            access._journal.tallies()

    def timed(function: Any) -> float:
        best = []
        for _ in range(args.repeat):
            reset()
            best.append(timeit.timeit(function, number=args.number))
        reset()
        return min(best) / args.number / 2 * 1e6  # µs per request (two per call)

    async def measure() -> tuple[dict[str, float], list[Any]]:
        # AccessLog.add arms its timer on the running loop; it never fires within a timing.
        times = {
            "off_us": timed(functools.partial(request, executor_off, pool_off, None)),
            "on_us": timed(functools.partial(request, executor_on, pool_on, access)),
        }
        # A chunk as the router packs it: counted into the metrics, and formatted (or
        # marshalled for a writer process). None with the journal: each record is formatted
        # and counted as it is added, in the hot path timed above.
        reset()
        for _ in range(0 if access._journal is not None else CHUNK // 2):
            request(executor_on, pool_on, access)
        batch = list(access._pending)
        if access._timer is not None:
            access._timer.cancel()
            access._timer = None
            access._rewatch()
        return times, batch

    times, batch = asyncio.run(measure())

    def pack() -> None:
        access._pending[:] = batch
        access._tallied = access._folded = 0
        access._pack()
        access._packed.clear()
        access._packed_count = 0

    per = 20 * len(batch) / 1e6
    pack_us = min(timeit.repeat(pack, number=20, repeat=5)) / per if batch else 0.0
    writer_us = 0.0
    if not access.in_process:  # the lines are formatted by the writer process
        sent = [record.fields() for record in batch]  # as _pack marshals them
        payload = marshal.dumps((0, sent))
        offset = time.time() - time.monotonic()
        unmarshal = min(timeit.repeat(lambda: marshal.loads(payload), number=20, repeat=5))
        formatting = min(
            timeit.repeat(lambda: access.format_lines(sent, offset), number=20, repeat=5)
        )
        writer_us = (unmarshal + formatting) / per
    router_us, source = router_cpu_us(args.router_cpu_us)
    hot = times["on_us"] - times["off_us"]
    return {
        "router_cpu_us_per_request": router_us,
        "router_cpu_us_source": source,
        "lines_formatted": (
            "in process, C, as each record is added (journal)"
            if access._journal is not None
            else "in process, C"
            if access.in_process
            else "writer process, Python"
        ),
        "hot_path_us": {key: round(value, 3) for key, value in times.items()},
        "hot_path_cost_us": round(hot, 3),
        "pack_us_per_record": round(pack_us, 3),
        "writer_us_per_record": round(writer_us, 3),
        "hot_path_cost_pct": round(hot / router_us * 100, 2),
        "router_cost_pct": round((hot + pack_us) / router_us * 100, 2),
        "total_cost_pct": round((hot + pack_us + writer_us) / router_us * 100, 2),
    }


def main() -> None:
    args = parse_args()
    if args.instructions:
        with Workdir("fissile-bench-obs-") as workdir:
            counts = instructions(args, workdir)
        on, off = counts["sides"]["on"]["median"], counts["sides"]["off"]["median"]
        log(
            f"instructions per request of the platform's process: {on} on, {off} off:"
            f" +{counts['cost_instructions_per_request']} ({counts['cost_pct']}%)"
        )
        write_results(
            "observability_instructions",
            {
                "benchmark": "observability_cost --instructions",
                "machine": machine_info(),
                "parameters": vars(args),
                **counts,
            },
            args.output,
        )
        return
    with tempfile.TemporaryDirectory(prefix="fissile-bench-obs-") as workdir:
        costs = bench(args, Path(workdir))
    log(
        f"hot path: {costs['hot_path_us']['on_us']:.2f} µs on,"
        f" {costs['hot_path_us']['off_us']:.2f} off per request: +{costs['hot_path_cost_us']} µs,"
        f" {costs['hot_path_cost_pct']}% of the router's {costs['router_cpu_us_per_request']} µs;"
        f" with packing ({costs['pack_us_per_record']} µs a record: counted, and"
        f" {costs['lines_formatted']}) {costs['router_cost_pct']}%; with the writer process"
        f" ({costs['writer_us_per_record']} µs a record) {costs['total_cost_pct']}%"
    )
    write_results(
        "observability_cost",
        {
            "benchmark": "observability_cost",
            "machine": machine_info(),
            "parameters": vars(args),
            **costs,
        },
        args.output,
    )


if __name__ == "__main__":
    main()
