"""Warm throughput and latency: a warm hello through the fissile router against a bare uvicorn
app (httptools + uvloop, one worker, access log off) answering the same ``Hello, world!``, and
against Google's functions-framework serving the same function, under the same wrk load, in the
same run.

Measured:

* wrk load (default 2 threads, 32 connections, 10 s after a 2 s warm-up): req/s, p50/p99, for
  bare uvicorn (before and after the platform runs) and for each fissile case (Fission-style
  hello at max_scale 10 and 1, native hello at max_scale 10);
* the cost of request metrics and the access log: fissile as it comes against fissile with
  ``--no-metrics --access-log off`` and, as an A/A control, against a second fissile as it
  comes; ``--cost-pairs`` groups of new platforms, three up at once, their wrk runs rotating
  (``--cost-rounds`` rounds of ``--cost-duration`` s): cost = the median over all pairs of
  ``1 - on/off`` of req/s (with their min and max), and of the extra CPU per request of the
  platform's process, of it with the access log's writer process, and of everything the
  benchmark started; the control's figures beside, the same way;
* sequential latency without load, one keep-alive connection per target, rounds visiting bare,
  the router, and one instance's unix socket directly (found through the function's log and
  /proc, bypassing the router): router overhead = router p50 - direct p50.

    .venv/bin/python benchmarks/warm.py [--duration 10] [--connections 32] [--scales 10,1]

Prints JSON and writes it to benchmarks/results/warm.json (``--only-cost``: warm_cost.json).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    HELLO_BODY,
    BareUvicorn,
    CpuMeter,
    FunctionsFramework,
    Platform,
    RawHTTP,
    Workdir,
    _machine_ticks,
    _tree_cpu_ticks,
    get_request,
    http_get,
    log,
    machine_info,
    ratio,
    run_pyload,
    run_wrk,
    summarize,
    wait_until_quiet,
    write_results,
    wrk_path,
    wrk_version,
)

TARGET_RPS_RATIO = 0.5  # of bare uvicorn
TARGET_FF_RATIO = 1.5  # of functions-framework
TARGET_ROUTER_OVERHEAD_MS = 0.150  # router p50 - direct-to-instance p50, sequential
TARGET_OBSERVABILITY_COST_PCT = 5.0  # of warm req/s: metrics + access log on against off
OBSERVABILITY_OFF = ("--no-metrics", "--access-log", "off")
CONTRACTS = {
    "fission_style": 'def main():\n    return "Hello, world!"\n',
    "native": 'def main(request):\n    return "Hello, world!"\n',
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument(
        "--scales",
        default="10,1",
        help="max_scale of the fissile function, one measured run each; the first is the"
        " headline (10 is the platform's default)",
    )
    parser.add_argument(
        "--native-scales",
        default="10",
        help="max_scale of extra runs with a native `def main(request)` hello ('' for none)",
    )
    parser.add_argument("--concurrency", type=int, default=1, help="the function's concurrency")
    parser.add_argument(
        "--sequential", type=int, default=2000, help="requests of the one-connection latency test"
    )
    parser.add_argument(
        "--no-wrk", action="store_true", help="use the Python load generator even if wrk exists"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each measured run, wait up to this many seconds for other processes to"
        " use < 10%% of the CPUs (0: don't wait; the CPU use of others is recorded anyway)",
    )
    parser.add_argument(
        "--cost-rounds",
        type=int,
        default=None,
        help="rounds of alternating runs (metrics + access log on, off, and the A/A control)"
        " per group of platforms measuring their cost (0: none; default 2)",
    )
    parser.add_argument(
        "--cost-pairs",
        type=int,
        default=None,
        help="groups of new platforms (on, off, control) the cost's rounds run on, one after"
        " the other (default 9 with --only-cost, else 1): what sets a process's speed (hash"
        " seeds, memory layout) differs from group to group by more than the cost, so the"
        " groups, not the rounds, are the samples",
    )
    parser.add_argument(
        "--no-cost-control",
        dest="cost_control",
        action="store_false",
        help="no A/A control (a second platform as it comes, compared with the first as off"
        " is): the noise between two alike processes is then not measured",
    )
    parser.add_argument(
        "--cost-duration",
        type=float,
        default=5.0,
        help="seconds per measured run of the cost's pairs (short runs, many pairs: the"
        " machine's drift is shared by both sides of a pair)",
    )
    parser.add_argument(
        "--cost-off",
        default=None,
        help="the `fissile up` options of the cost's other side (default: --no-metrics"
        " --access-log off; '--access-log off' isolates the access log, '' gives an A/A run)",
    )
    parser.add_argument(
        "--cost-warmup", type=float, default=1.0, help="seconds of load before each cost run"
    )
    parser.add_argument(
        "--only-cost",
        action="store_true",
        help="measure only the cost of metrics + access log (no bare, functions-framework or"
        " other fissile runs)",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="default: benchmarks/results/warm.json (warm_cost.json with --only-cost)",
    )
    return parser.parse_args()


class Load:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.wrk = None if args.no_wrk else wrk_path()

    def describe(self) -> dict[str, Any]:
        if self.wrk:
            return {"tool": "wrk", "path": self.wrk, "version": wrk_version(self.wrk)}
        return {
            "tool": "python-asyncio",
            "why": "wrk not found" if not self.args.no_wrk else "--no-wrk",
            "caveat": "one Python process generating load; numbers are a floor for both sides",
        }

    def run(self, port: int, path: str, duration: float) -> dict[str, Any]:
        args = self.args
        if self.wrk:
            url = f"http://127.0.0.1:{port}{path}"
            return run_wrk(self.wrk, url, args.threads, args.connections, duration, self.workdir)
        return run_pyload(port, path, args.connections, duration)

    def measure(
        self,
        port: int,
        path: str,
        duration: float | None = None,
        warmup: float | None = None,
        before_run: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        quiet = wait_until_quiet(self.args.quiet_wait) if self.args.quiet_wait > 0 else None
        warmup = self.args.warmup if warmup is None else warmup
        if warmup > 0:
            self.run(port, path, warmup)
        if before_run is not None:
            before_run()
        meter = CpuMeter().start()
        result = self.run(port, path, self.args.duration if duration is None else duration)
        result["cpu"] = meter.stop()
        if quiet is not None:
            result["quiet_wait"] = quiet
        log(
            f"  {path}: {result['requests_per_s']:.0f} req/s,"
            f" p50 {result['latency_ms']['p50']:.2f} ms, p99 {result['latency_ms']['p99']:.2f} ms"
            f" (other processes: {result['cpu']['other_processes_pct']}% CPU)"
        )
        return result


def check(port: int, path: str) -> None:
    status, body = http_get(port, path)
    if status != 200 or body != HELLO_BODY:
        raise RuntimeError(f"GET {path}: HTTP {status} {body[:200]!r}")


def measure_bare(load: Load, workdir: Path, stops: list[dict[str, Any]]) -> dict[str, Any]:
    server = BareUvicorn(workdir)
    server.start()
    try:
        check(server.port, "/")
        return load.measure(server.port, "/")
    finally:
        stops.append(server.stop())


def measure_ff(load: Load, workdir: Path) -> dict[str, Any] | None:
    if not FunctionsFramework.available():
        log("functions-framework is not installed (make bench installs it): no such baseline")
        return None
    server = FunctionsFramework(workdir)
    server.start()
    try:
        check(server.port, "/")
        run = load.measure(server.port, "/")
        run["command"] = " ".join(server.command()[:3]) + " ..."
        return run
    finally:
        run_stop = server.stop()
        log(f"  functions-framework stopped in {run_stop['stop_seconds']}s")


def bench_fissile(args: argparse.Namespace, load: Load, workdir: Path) -> dict[str, Any]:
    log("fissile")
    (workdir / "fissile").mkdir()
    platform = Platform(workdir / "fissile")
    platform.start()
    runs: dict[str, Any] = {}
    result: dict[str, Any] = {"runs": runs}
    targets: list[tuple[str, Callable[[], RawHTTP], str]] = []
    try:
        for key, contract, scale in cases(args):
            # A new function per case (the previous one's instances stay idle), so a run never
            # inherits more instances than its max_scale allows.
            name = "hello" if not runs else key.replace("_", "-")
            path = f"/{name}"
            platform.create_function(
                name, CONTRACTS[contract], route=path, max_scale=scale, concurrency=args.concurrency
            )
            check(platform.port, path)
            log(f" {contract}, max_scale {scale}, concurrency {args.concurrency}: GET {path}")
            run: dict[str, Any] = {"path": path, "contract": contract, "max_scale": scale}
            run["load"] = load.measure(platform.port, path)
            run["function_status_after"] = platform.client.get("functions", name).get("status")
            runs[key] = run
        for contract in dict.fromkeys(contract for _, contract, _ in cases(args)):
            # A function of its own with exactly one instance (min = max scale = 1), so the
            # router and the direct client reach the same process, and the autoscaler (which
            # scales the load runs' functions down meanwhile) cannot stop it.
            name = f"seq-{contract.replace('_', '-')}"
            path = f"/{name}"
            platform.create_function(
                name, CONTRACTS[contract], route=path, min_scale=1, max_scale=1
            )
            check(platform.port, path)
            targets.append((f"{contract}_router", lambda: RawHTTP.tcp(platform.port), path))
            socket_path = instance_socket(platform, name)
            if socket_path is not None:
                targets.append((f"{contract}_direct", lambda p=socket_path: RawHTTP.unix(p), path))
        if args.sequential:
            # A bare server for these rounds only: nothing else of the benchmark's should be
            # running during the load runs above (see SERVER_SESSION in _harness.py).
            bare = BareUvicorn(workdir)
            bare.start()
            try:
                targets.insert(0, ("bare", lambda: RawHTTP.tcp(bare.port), "/"))
                log(f" sequential latency: {args.sequential} rounds over {len(targets)} targets")
                result["sequential_ms"], result["sequential_samples_ms"] = sequential(
                    targets, args.sequential
                )
            finally:
                bare.stop()
    finally:
        result["platform"] = {"startup_s": platform.startup_seconds, "stop": platform.stop()}
    return result


def bench_cost(args: argparse.Namespace, load: Load, workdir: Path) -> dict[str, Any]:
    """Warm req/s and CPU per request of the headline case with request metrics and the
    access log on (the default) and off.

    ``--cost-pairs`` times, a new group of platforms up at once: "on", "off" and (the A/A
    control, unless ``--no-cost-control``) a second "on" alike; ``--cost-rounds`` rounds of
    runs, the order rotating so that no side always goes first. New processes per group: a
    pair of processes can differ by several % however alike they are (memory layout, hash
    seeds, where the scheduler puts them), and a run that kept its two processes throughout
    carried that bias into its median. The control measures that noise in the same run."""
    scale = args.scales[0]
    off_args = tuple(args.cost_off.split()) if args.cost_off is not None else OBSERVABILITY_OFF
    sides: dict[str, tuple[str, ...]] = {"on": (), "off": off_args}
    if args.cost_control:
        sides["control"] = ()
    log(
        f"cost of metrics + access log: fission_style, max_scale {scale}, {args.cost_pairs}"
        f" platform groups ({', '.join(sides)}) of {args.cost_rounds} rounds"
    )
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in sides}
    groups: list[dict[str, Any]] = []
    for group in range(args.cost_pairs):
        platforms = {
            key: Platform(workdir / f"fissile-{key}-{group}", extra) for key, extra in sides.items()
        }
        group_runs: dict[str, list[dict[str, Any]]] = {key: [] for key in sides}
        try:
            for key, platform in platforms.items():
                platform.workdir.mkdir()
                platform.start()
                platform.create_function(
                    "hello",
                    CONTRACTS["fission_style"],
                    route="/hello",
                    max_scale=scale,
                    concurrency=args.concurrency,
                )
                check(platform.port, "/hello")
                log(f"  group {group} {key}: {' '.join(platform.extra_args) or 'defaults'}")
            order = list(platforms.items())
            for round_ in range(args.cost_rounds):
                # The order rotates: each side goes first, in the middle and last in turn.
                shift = (round_ + group) % len(order)
                for key, platform in order[shift:] + order[:shift]:
                    log(f" group {group} round {round_} {key}")
                    run = cost_run(args, load, platform)
                    group_runs[key].append(run)
                    runs[key].append(run)
        finally:
            for platform in platforms.values():
                if platform.proc is not None:
                    platform.stop()
        groups.append(
            {
                "versus_off": compare(group_runs["on"], group_runs["off"]),
                **(
                    {"control": compare(group_runs["on"], group_runs["control"])}
                    if "control" in group_runs
                    else {}
                ),
            }
        )
    result = compare(runs["on"], runs["off"])
    control = compare(runs["on"], runs["control"]) if "control" in runs else None
    cost = result["rps_cost_pct"]["median"]
    cpu_cost = result["router_cpu_cost_pct"]["median"]
    log(
        f"  metrics + access log: throughput cost (median of pairs) {cost}%"
        f" {result['rps_cost_pct']}, router CPU per request {result['router_cpu_cost_pct']}%,"
        f" router + writer {result['total_cpu_cost_pct']}%, the benchmark's processes"
        f" {result['benchmark_cpu_cost_pct']}%"
        f" (target <= {TARGET_OBSERVABILITY_COST_PCT}%)"
    )
    if control is not None:
        log(
            f"  A/A control (on against on): throughput {control['rps_cost_pct']}%,"
            f" router CPU {control['router_cpu_cost_pct']}%"
        )
    on = [run["requests_per_s"] for run in runs["on"]]
    off = [run["requests_per_s"] for run in runs["off"]]
    return {
        "case": {"contract": "fission_style", "max_scale": scale, "path": "/hello"},
        "off_args": list(off_args),
        "groups": args.cost_pairs,
        "rounds_per_group": args.cost_rounds,
        "rounds": len(result["pairs"]["rps_cost_pct"]),
        "run_duration_s": args.cost_duration,
        "rps": {"on": on, "off": off},
        "runs": runs,
        "per_group": groups,
        "versus_off": result,
        "control": control,
        # The figures of earlier versions of this benchmark, from the same runs.
        "cost_pct_per_pair": result["pairs"]["rps_cost_pct"],
        "cost_pct_pairs": result["rps_cost_pct"],
        "cost_pct_of_means": result["rps_cost_pct_of_means"],
        # Each group's median pair: the pairs of a group share its processes' bias.
        "cost_pct_group_medians": [
            group["versus_off"]["rps_cost_pct"]["median"] for group in groups
        ],
        "control_pct_group_medians": [
            group["control"]["rps_cost_pct"]["median"] for group in groups if "control" in group
        ],
        "router_cpu_us_per_request": {
            "on": [run["router_cpu_us_per_request"] for run in runs["on"]],
            "off": [run["router_cpu_us_per_request"] for run in runs["off"]],
        },
        "access_writer_cpu_us_per_request": [
            run["access_writer_cpu_us_per_request"] for run in runs["on"]
        ],
        "total_cpu_us_per_request": {
            "on": [run["total_cpu_us_per_request"] for run in runs["on"]],
            "off": [run["total_cpu_us_per_request"] for run in runs["off"]],
        },
        "router_cpu_cost_pct": cpu_cost,
        "router_cpu_cost_pct_pairs": result["router_cpu_cost_pct"],
        "total_cpu_cost_pct_pairs": result["total_cpu_cost_pct"],
        "total_cpu_cost_pct": result["total_cpu_cost_pct"]["median"],
        "benchmark_cpu_cost_pct": result["benchmark_cpu_cost_pct"]["median"],
        "control_cost_pct": None if control is None else control["rps_cost_pct"]["median"],
        "control_router_cpu_cost_pct": (
            None if control is None else control["router_cpu_cost_pct"]["median"]
        ),
        "cost_pct": cost,
        "cost_pct_at_most": TARGET_OBSERVABILITY_COST_PCT,
        "cost_met": cost is not None and cost <= TARGET_OBSERVABILITY_COST_PCT,
        "router_cpu_cost_met": cpu_cost is not None and cpu_cost <= TARGET_OBSERVABILITY_COST_PCT,
    }


def cost_run(args: argparse.Namespace, load: Load, platform: Platform) -> dict[str, Any]:
    """One wrk run of a cost side, with what its platform process (and the access log's
    writer process) spent per request: CPU, and context switches of the platform process."""
    assert platform.proc is not None
    pid = platform.proc.pid
    writers = access_writers(pid)
    before, switches = process_cpu(pid), context_switches(pid)
    writer_before = sum(process_cpu(p) for p in writers)
    # Everything this benchmark started (wrk, the platforms and their instances) and the
    # machine's interrupts, measured around the wrk run only (the warm-up is left out).
    holder: dict[str, int] = {}

    def begin() -> None:
        holder["tree"], holder["irq"] = _tree_cpu_ticks(os.getpid()), _machine_ticks()[1]

    run = load.measure(
        platform.port, "/hello", args.cost_duration, args.cost_warmup, before_run=begin
    )
    tree = _tree_cpu_ticks(os.getpid()) - holder["tree"] + _machine_ticks()[1] - holder["irq"]
    spent = process_cpu(pid) - before
    voluntary, involuntary = (b - a for a, b in zip(switches, context_switches(pid), strict=True))
    writer = sum(process_cpu(p) for p in writers) - writer_before
    requests = max(run["requests"], 1)
    run["access_writer_cpu_us_per_request"] = round(writer / requests * 1e6, 2)
    # The platform's own process (router, control API, executor), not its instances: what
    # the router spends per request, less sensitive to what else runs on the machine than
    # req/s (wrk's, the instances' and others' CPU are not in it).
    run["router_cpu_us_per_request"] = round(spent / requests * 1e6, 2)
    # What the machine spends per request because of the platform: its process and the
    # access log's writer process (deferred work, but CPU all the same).
    run["total_cpu_us_per_request"] = round((spent + writer) / requests * 1e6, 2)
    # The machine's work per request, wherever done: with the cores saturated, req/s
    # follows its inverse.
    run["benchmark_cpu_us_per_request"] = round(tree / os.sysconf("SC_CLK_TCK") / requests * 1e6, 2)
    run["router_context_switches_per_request"] = {
        "voluntary": round(voluntary / requests, 4),
        "involuntary": round(involuntary / requests, 4),
    }
    log(
        f"  router CPU: {run['router_cpu_us_per_request']} µs per request,"
        f" access log writer: {run['access_writer_cpu_us_per_request']} µs"
    )
    return run


def compare(on: list[dict[str, Any]], off: list[dict[str, Any]]) -> dict[str, Any]:
    """Runs of two sides, paired in the order they ran: the pairs' loss of req/s and their
    extra CPU per request (in %), with median, min and max. The median of pairs: one
    disturbed run moves it little, unlike the mean of req/s."""
    rps_on = [run["requests_per_s"] for run in on]
    rps_off = [run["requests_per_s"] for run in off]
    pairs = {
        "rps_cost_pct": [
            round((1 - a / b) * 100, 2) for a, b in zip(rps_on, rps_off, strict=True) if b
        ],
    }
    for key in (
        "router_cpu_us_per_request",
        "total_cpu_us_per_request",
        "benchmark_cpu_us_per_request",
    ):
        pairs[key.replace("_us_per_request", "_cost_pct")] = [
            round((a[key] / b[key] - 1) * 100, 2) for a, b in zip(on, off, strict=True) if b[key]
        ]
    mean_on = sum(rps_on) / len(rps_on) if rps_on else 0.0
    mean_off = sum(rps_off) / len(rps_off) if rps_off else 0.0
    return {
        "pairs": pairs,
        **{key: spread(values) for key, values in pairs.items()},
        "rps_cost_pct_of_means": round((1 - mean_on / mean_off) * 100, 2) if mean_off else None,
        "router_cpu_us_per_request_median": {
            "on": median_of(on, "router_cpu_us_per_request"),
            "off": median_of(off, "router_cpu_us_per_request"),
        },
        "benchmark_cpu_us_per_request_median": {
            "on": median_of(on, "benchmark_cpu_us_per_request"),
            "off": median_of(off, "benchmark_cpu_us_per_request"),
        },
        "access_writer_cpu_us_per_request_median": {
            "on": median_of(on, "access_writer_cpu_us_per_request"),
            "off": median_of(off, "access_writer_cpu_us_per_request"),
        },
    }


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    return round(statistics.median(run[key] for run in runs), 2) if runs else None


def context_switches(pid: int) -> tuple[int, int]:
    """Voluntary and involuntary context switches of a process, its threads included."""
    voluntary = involuntary = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as status:
                for line in status:
                    if line.startswith("voluntary_ctxt_switches:"):
                        voluntary += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        involuntary += int(line.split()[1])
        except OSError:
            continue  # a thread that ended meanwhile
    return voluntary, involuntary


def spread(values: list[float]) -> dict[str, float | None]:
    """Median, min and max of per-pair differences."""
    if not values:
        return {"median": None, "min": None, "max": None}
    return {
        "median": round(statistics.median(values), 2),
        "min": min(values),
        "max": max(values),
    }


def access_writers(parent: int) -> list[int]:
    """The access log's writer process of the platform ``parent`` (``--access-log`` on)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except OSError:
            continue
        if ppid == parent and b"fissile.observability.access" in command:
            found.append(int(entry))
    return found


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) one process has used, its threads included."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cases(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(key, contract, max_scale) of each fissile run; the first is the headline."""
    found = [(f"fission_style_max{scale}", "fission_style", scale) for scale in args.scales]
    found[1:1] = [(f"native_max{scale}", "native", scale) for scale in args.native_scales]
    return found


def instance_socket(platform: Platform, function: str) -> str | None:
    """The unix socket of a live instance of ``function``: its pid from the function's log
    ("instance iN ready (pid P)"), its listening socket from /proc."""
    text = b"".join(platform.client.logs(function, tail=1000)).decode(errors="replace")
    pids = {int(pid) for pid in re.findall(r"instance \S+ ready \(pid (\d+)\)", text)}
    for instance in platform.instances():
        if instance["pid"] in pids and instance["sockets"]:
            path: str = instance["sockets"][0]
            return path
    log(f"  no instance socket of {function} found; no direct measurement")
    return None


def sequential(
    targets: list[tuple[str, Callable[[], RawHTTP], str]], rounds: int
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """One keep-alive connection per target, one request at a time; each round visits every
    target once, so all of them see the same background load."""
    clients = [(name, connect(), get_request(path)) for name, connect, path in targets]
    samples: dict[str, list[float]] = {name: [] for name, _, _ in clients}
    try:
        for i in range(rounds + 200):  # the first 200 rounds warm up
            for name, client, raw in clients:
                begin = time.perf_counter()
                status, body = client.request(raw)
                elapsed = (time.perf_counter() - begin) * 1000
                if status != 200 or body != HELLO_BODY:
                    raise RuntimeError(f"{name}: HTTP {status} {body[:200]!r}")
                if i >= 200:
                    samples[name].append(elapsed)
    finally:
        for _, client, _ in clients:
            client.close()
    raw = {name: [round(v, 4) for v in values] for name, values in samples.items()}
    return {name: summarize(values) for name, values in samples.items()}, raw


def average(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of several load runs' req/s and latency percentiles."""
    return {
        "requests_per_s": round(sum(r["requests_per_s"] for r in runs) / len(runs), 1),
        "latency_ms": {
            key: round(sum(r["latency_ms"][key] for r in runs) / len(runs), 3)
            for key in ("p50", "p90", "p99")
        },
    }


def main() -> None:
    args = parse_args()
    args.scales = [int(s) for s in str(args.scales).split(",") if s.strip()]
    args.native_scales = [int(s) for s in str(args.native_scales).split(",") if s.strip()]
    if args.cost_rounds is None:
        args.cost_rounds = 2
    if args.cost_pairs is None:
        args.cost_pairs = 9 if args.only_cost else 1
    started = time.monotonic()
    if args.only_cost:
        with Workdir("fissile-bench-warm-") as workdir:
            load = Load(args, workdir)
            only: dict[str, Any] = {
                "benchmark": "warm",
                "machine": machine_info(),
                "parameters": {**vars(args), "load_generator": load.describe()},
                "observability_cost": bench_cost(args, load, workdir),
            }
        only["elapsed_s"] = round(time.monotonic() - started, 1)
        # A file of its own: warm.json stays the last full run (the table's warm rows).
        write_results("warm_cost", only, args.output)
        return
    with Workdir("fissile-bench-warm-") as workdir:
        load = Load(args, workdir)
        result: dict[str, Any] = {
            "benchmark": "warm",
            "machine": machine_info(),
            "parameters": {**vars(args), "load_generator": load.describe()},
        }
        # Bare runs with nothing of fissile's up, before the platform starts and after it
        # stops; each time a new server.
        bare_runs, bare_stops = [], []
        log("bare uvicorn (before fissile)")
        bare_runs.append(measure_bare(load, workdir, bare_stops))
        log("functions-framework")
        ff = measure_ff(load, workdir)
        fissile = bench_fissile(args, load, workdir)
        cost = (
            bench_cost(args, load, workdir)
            if args.cost_rounds > 0 and args.cost_pairs > 0
            else None
        )
        log("bare uvicorn (after fissile)")
        bare_runs.append(measure_bare(load, workdir, bare_stops))
    bare = {"runs": bare_runs, "average": average(bare_runs), "stops": bare_stops}

    bare_load = bare["average"]
    comparisons: dict[str, Any] = {}
    for key, run in fissile["runs"].items():
        fl = run["load"]
        comparisons[key] = {
            "fissile_rps": fl["requests_per_s"],
            "bare_rps": bare_load["requests_per_s"],
            "rps_ratio_fissile_over_bare": ratio(fl["requests_per_s"], bare_load["requests_per_s"]),
            "p50_ms": {"fissile": fl["latency_ms"]["p50"], "bare": bare_load["latency_ms"]["p50"]},
            "p99_ms": {"fissile": fl["latency_ms"]["p99"], "bare": bare_load["latency_ms"]["p99"]},
            "p50_ratio_fissile_over_bare": ratio(
                fl["latency_ms"]["p50"], bare_load["latency_ms"]["p50"]
            ),
            "p99_ratio_fissile_over_bare": ratio(
                fl["latency_ms"]["p99"], bare_load["latency_ms"]["p99"]
            ),
            "p50_difference_ms_fissile_minus_bare": round(
                fl["latency_ms"]["p50"] - bare_load["latency_ms"]["p50"], 3
            ),
        }
        if ff is not None:
            comparisons[key].update(
                ff_rps=ff["requests_per_s"],
                rps_ratio_fissile_over_ff=ratio(fl["requests_per_s"], ff["requests_per_s"]),
                p50_ratio_fissile_over_ff=ratio(fl["latency_ms"]["p50"], ff["latency_ms"]["p50"]),
                p99_ratio_fissile_over_ff=ratio(fl["latency_ms"]["p99"], ff["latency_ms"]["p99"]),
            )
    headline_key = next(iter(fissile["runs"]))
    headline = comparisons[headline_key]
    overhead: dict[str, Any] = {
        "under_load_p50_minus_bare_p50_ms": headline["p50_difference_ms_fissile_minus_bare"],
    }
    seq = fissile.get("sequential_ms", {})
    if "bare" in seq:
        p50 = {name: values["p50"] for name, values in seq.items()}
        overhead["sequential_p50_ms"] = p50
        for contract in CONTRACTS:
            router, direct_p50 = p50.get(f"{contract}_router"), p50.get(f"{contract}_direct")
            if router is None:
                continue
            overhead[contract] = {
                "router_minus_bare_p50_ms": round(router - p50["bare"], 3),
                "router_minus_direct_p50_ms": (
                    round(router - direct_p50, 3) if direct_p50 is not None else None
                ),
                "direct_minus_bare_p50_ms": (
                    round(direct_p50 - p50["bare"], 3) if direct_p50 is not None else None
                ),
            }
    router_ms = (overhead.get("fission_style") or {}).get("router_minus_direct_p50_ms")
    ff_ratio = headline.get("rps_ratio_fissile_over_ff")
    result.update(
        bare=bare,
        functions_framework=ff,
        fissile=fissile,
        comparison=comparisons,
        router_overhead=overhead,
        observability_cost=cost,
        target={
            "run": headline_key,
            "rps_ratio_over_bare_at_least": TARGET_RPS_RATIO,
            "rps_ratio_over_bare": headline["rps_ratio_fissile_over_bare"],
            "rps_ratio_over_bare_met": (headline["rps_ratio_fissile_over_bare"] or 0)
            >= TARGET_RPS_RATIO,
            "rps_ratio_over_ff_at_least": TARGET_FF_RATIO,
            "rps_ratio_over_ff": ff_ratio,
            "rps_ratio_over_ff_met": ff_ratio is not None and ff_ratio >= TARGET_FF_RATIO,
            "router_overhead_p50_ms_at_most": TARGET_ROUTER_OVERHEAD_MS,
            "router_overhead_p50_ms": router_ms,
            "router_overhead_met": router_ms is not None and router_ms <= TARGET_ROUTER_OVERHEAD_MS,
            "observability_cost_pct_at_most": TARGET_OBSERVABILITY_COST_PCT,
            "observability_cost_pct": None if cost is None else cost["cost_pct"],
            "observability_cost_met": None if cost is None else cost["cost_met"],
        },
        notes=[
            f"{os.cpu_count()} CPUs, nothing pinned: the load generator, the platform process"
            " (router + control API + executor on one event loop) and the instance processes"
            " compete for them; bare uvicorn shares them only with the load generator.",
            "The fissile side does more work per request by design: router parse + route match"
            " + a second HTTP/1.1 hop over a unix socket + the instance's own parse and the"
            " Fission-style (Flask request) handler. Bare is one process, one hop.",
            "Bare is measured twice, each time on a new server, before the platform starts and"
            " after it stops, and compared by the average of both (each run is in bare.runs)."
            " No bare server runs during fissile's load runs.",
            "Servers under test (fissile up, uvicorn) run in their own session, hence their"
            " own autogroup for the CPU scheduler, as a service would; wrk runs in the"
            " benchmark's session. Each fissile instance is a session (and autogroup) of its"
            " own as well (it calls setsid).",
            f"Each fissile run uses a new function with that max_scale and concurrency"
            f" {args.concurrency}; with concurrency 1 and {args.connections} connections the"
            " pool scales to max_scale instances.",
            "sequential_ms: no load; one keep-alive connection per target, one request at a"
            " time from a small Python client (its cost is in every figure alike), rounds"
            " visiting every target in turn, to a function of their own with exactly one instance"
            " (min_scale = max_scale = 1). <contract>_direct sends the same request to that"
            " instance's unix socket (found through the function's log and /proc), skipping the"
            " router: router_minus_direct is what the router hop adds per request. A unix"
            " socket round trip is cheaper than a loopback TCP one, so direct may beat bare"
            " without the instance being faster; router_minus_bare compares TCP with TCP.",
            "cpu.other_processes_pct: CPU used during a run by processes this benchmark did not"
            " start (e.g. a test suite); anything well above 0 makes that run pessimistic.",
            "functions_framework: `functions-framework --target hello` (its default server,"
            " gunicorn with its default worker and threads) serving `def hello(request): return"
            " 'Hello, world!'`, measured once, after the first bare run, with nothing of"
            " fissile's running.",
        ],
        elapsed_s=round(time.monotonic() - started, 1),
    )
    write_results("warm", result, args.output)


if __name__ == "__main__":
    main()
