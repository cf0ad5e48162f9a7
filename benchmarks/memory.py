"""Memory, and many functions.

1. **Per idle instance.** ``--functions`` hello functions are called once each and left idle;
   for every specialized instance, the warm (unspecialized) ones and the zygote: private memory
   (pages only that process maps: what one more instance costs), PSS and RSS, from
   /proc/<pid>/smaps_rollup. Forked instances share the zygote's pages (it calls
   ``gc.freeze()`` before forking). Baselines in the same run: an idle fresh interpreter with
   the same imports (what a process per function without a zygote costs), an idle bare uvicorn
   app, and an idle functions-framework (its gunicorn master and worker together).
2. **1,000 functions.** A new platform; the supervisor's (control plane + router + executor)
   RSS with one function deployed, then with ``--many`` more (each its own package and its own
   HTTP trigger, scaled to zero). Routing latency is measured on the first function's route
   (a template, ``/many/0/{id}``) before and after, sequentially on one keep-alive connection;
   and the route table's lookup alone, in this process, with 1 and with 1,000 routes.

    .venv/bin/python benchmarks/memory.py [--functions 10] [--many 1000]

Prints JSON and writes it to benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    PYTHON,
    BareUvicorn,
    CpuMeter,
    FunctionsFramework,
    Platform,
    RawHTTP,
    Workdir,
    descendants,
    get_request,
    log,
    machine_info,
    memory_of,
    ratio,
    summarize,
    write_results,
)

TARGET_INSTANCE_PRIVATE_MIB = 5.0
TARGET_MANY_RSS_MB = 50.0

HELLO = 'def main():\n    return "Hello, world!"\n'
FRESH_IMPORTS = "import fissile.runtime.server, uvloop, httptools, flask"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", type=int, default=10, help="idle instances measured")
    parser.add_argument("--many", type=int, default=1000, help="functions of part 2")
    parser.add_argument("--requests", type=int, default=2000, help="routing latency samples")
    parser.add_argument("--sandbox", default="auto", help="fissile up --sandbox (default auto)")
    parser.add_argument("--output", default=None, help="default: benchmarks/results/memory.json")
    return parser.parse_args()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1000, 2)  # kB -> MB (decimal, as the target)
    raise RuntimeError(f"no VmRSS for {pid}")


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "mean": round(sum(ordered) / len(ordered), 2),
        "min": ordered[0],
        "median": ordered[len(ordered) // 2],
        "max": ordered[-1],
    }


# -- 1. per instance ----------------------------------------------------------------------


def bench_instances(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    platform = Platform(workdir / "instances", ("--sandbox", args.sandbox))
    platform.workdir.mkdir()
    platform.start()
    try:
        specialized: list[int] = []
        for i in range(args.functions):
            name = f"idle-{i}"
            platform.create_function(name, f"# {name}\n{HELLO}")
            client = RawHTTP.tcp(platform.port)
            try:
                status, body = client.request(get_request(f"/function/{name}"))
            finally:
                client.close()
            if status != 200:
                raise RuntimeError(f"{name}: HTTP {status} {body[:200]!r}")
            specialized += platform.client.get("functions", name)["status"]["pids"]
        time.sleep(1.5)  # idle: the warm pool refilled, nothing in flight
        assert platform.proc is not None
        tree = [pid for pid, _ in descendants(platform.proc.pid)]
        zygote = next((pid for pid in tree if comm(pid) == "fz-python"), None)
        warm = [pid for pid in tree if comm(pid).startswith("fi-") and pid not in specialized]
        measured = {
            "specialized": [m for m in (memory_of(pid) for pid in specialized) if m],
            "warm": [m for m in (memory_of(pid) for pid in warm) if m],
        }
        result: dict[str, Any] = {
            "specialized_idle_instance_mib": {
                key: stats([m[key] for m in measured["specialized"]])
                for key in ("private_mib", "pss_mib", "rss_mib")
            },
            "warm_instance_mib": {
                key: stats([m[key] for m in measured["warm"]])
                for key in ("private_mib", "pss_mib", "rss_mib")
            },
            "zygote_mib": memory_of(zygote) if zygote else None,
            "supervisor_rss_mb": rss_mb(platform.proc.pid),
        }
    finally:
        result_stop = platform.stop()
    result["platform_stop"] = result_stop
    return result


def bench_baselines(workdir: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    fresh = subprocess.Popen(
        [PYTHON, "-c", f"{FRESH_IMPORTS}; import time; print('up', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert fresh.stdout is not None
        fresh.stdout.readline()
        time.sleep(0.3)
        found["fresh_interpreter_same_imports"] = {
            "command": f"python -c '{FRESH_IMPORTS}; ...sleep'",
            **(memory_of(fresh.pid) or {}),
        }
    finally:
        fresh.kill()
        fresh.wait()
    bare = BareUvicorn(workdir)
    bare.start()
    try:
        time.sleep(0.3)
        assert bare.proc is not None
        found["bare_uvicorn_idle"] = memory_of(bare.proc.pid)
    finally:
        bare.stop()
    if FunctionsFramework.available():
        ff = FunctionsFramework(workdir)
        ff.start()
        try:
            assert ff.proc is not None
            time.sleep(0.5)
            pids = [ff.proc.pid, *(pid for pid, _ in descendants(ff.proc.pid))]
            per = [m for m in (memory_of(pid) for pid in pids) if m]
            found["functions_framework_idle"] = {
                "processes": len(per),
                **{
                    key: round(sum(m[key] for m in per), 2)
                    for key in ("private_mib", "pss_mib", "rss_mib")
                },
            }
        finally:
            ff.stop()
    return found


# -- 2. many functions -----------------------------------------------------------------------


def sequential(port: int, path: str, requests: int) -> dict[str, Any]:
    client = RawHTTP.tcp(port)
    raw = get_request(path)
    samples = []
    try:
        for i in range(requests + 200):
            begin = time.perf_counter()
            status, body = client.request(raw)
            elapsed = (time.perf_counter() - begin) * 1000
            if status != 200 or body != b"Hello, world!":
                raise RuntimeError(f"{path}: HTTP {status} {body[:200]!r}")
            if i >= 200:
                samples.append(elapsed)
    finally:
        client.close()
    return summarize(samples)


def bench_many(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    platform = Platform(workdir / "many", ("--sandbox", args.sandbox))
    platform.workdir.mkdir()
    platform.start()
    assert platform.proc is not None
    try:
        platform.create_function("many-0", HELLO, route="/many/0/{id}")
        before_latency = sequential(platform.port, "/many/0/x", args.requests)
        time.sleep(1.0)
        before = rss_mb(platform.proc.pid)
        log(f"  one function: supervisor RSS {before} MB; creating {args.many} more")
        begin = time.perf_counter()
        for i in range(1, args.many + 1):
            name = f"many-{i}"
            platform.create_function(name, f"# {name}\n{HELLO}", route=f"/many/{i}/{{id}}")
            if i % 200 == 0:
                log(f"  {i}/{args.many} created; supervisor RSS {rss_mb(platform.proc.pid)} MB")
        created_s = time.perf_counter() - begin
        time.sleep(2.0)  # let the background scans of the new packages finish
        after = rss_mb(platform.proc.pid)
        after_latency = sequential(platform.port, "/many/0/x", args.requests)
        tree = [pid for pid, _ in descendants(platform.proc.pid)]
        instances = sum(1 for pid in tree if comm(pid).startswith("fi-"))
    finally:
        stop = platform.stop()
    return {
        "functions": args.many + 1,
        "create_s": round(created_s, 1),
        "supervisor_rss_mb": {"one_function": before, "after": after},
        "rss_increase_mb": round(after - before, 2),
        "rss_per_function_kb": round((after - before) * 1000 / args.many, 1),
        "instance_processes_after": instances,
        "routing_latency_ms": {"one_function": before_latency, "after": after_latency},
        "routing_p50_ratio_after_over_before": ratio(after_latency["p50"], before_latency["p50"]),
        "platform_stop": stop,
    }


def bench_lookup(many: int) -> dict[str, Any]:
    """The route table's match() alone: 1 route against ``many`` (a third each exact,
    template, prefix), looking up the last one added."""
    from fissile.router.routes import Route, RouteTable

    def table(n: int) -> RouteTable:
        routes = []
        for i in range(n):
            kind = i % 3
            if kind == 0:
                routes.append(Route(f"t{i}", f"f{i}", frozenset({"GET"}), f"/exact/{i}"))
            elif kind == 1:
                routes.append(Route(f"t{i}", f"f{i}", frozenset({"GET"}), f"/tpl/{i}/{{id}}"))
            else:
                routes.append(Route(f"t{i}", f"f{i}", frozenset(), f"/pre/{i}", prefix=True))
        routes.append(Route("last", "last", frozenset({"GET"}), "/tpl/last/{id}"))
        return RouteTable(routes)

    found: dict[str, Any] = {}
    for n in (1, many):
        t = table(n)
        assert t.match("GET", "/tpl/last/42") is not None
        loops = 100_000
        begin = time.perf_counter()
        for _ in range(loops):
            t.match("GET", "/tpl/last/42")
        found[f"routes_{n}_us_per_match"] = round((time.perf_counter() - begin) * 1e6 / loops, 3)
    found["ratio"] = ratio(found[f"routes_{many}_us_per_match"], found["routes_1_us_per_match"])
    return found


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    result: dict[str, Any] = {
        "benchmark": "memory",
        "machine": machine_info(),
        "parameters": vars(args),
    }
    meter = CpuMeter().start()
    with Workdir("fissile-bench-memory-") as workdir:
        log(f"1. {args.functions} idle instances")
        instances = bench_instances(args, workdir)
        log("   baselines: fresh interpreter, bare uvicorn, functions-framework")
        baselines = bench_baselines(workdir)
        log(f"2. {args.many} functions")
        many = bench_many(args, workdir)
    lookup = bench_lookup(args.many)
    private = instances["specialized_idle_instance_mib"]["private_mib"].get("median")
    fresh = baselines["fresh_interpreter_same_imports"].get("private_mib")
    result.update(
        instances=instances,
        baselines=baselines,
        many=many,
        route_lookup=lookup,
        cpu=meter.stop(),
        ratios={
            "fresh_interpreter_private_over_instance_private": ratio(fresh, private),
        },
        target={
            "instance_private_mib_at_most": TARGET_INSTANCE_PRIVATE_MIB,
            "instance_private_mib_median": private,
            "instance_met": private is not None and private <= TARGET_INSTANCE_PRIVATE_MIB,
            "many_rss_increase_mb_at_most": TARGET_MANY_RSS_MB,
            "many_rss_increase_mb": many["rss_increase_mb"],
            "many_met": many["rss_increase_mb"] <= TARGET_MANY_RSS_MB,
        },
        notes=[
            "private = Private_Clean + Private_Dirty: pages no other process maps. An instance"
            " shares the zygote's pages (imports, frozen heap) until it writes them.",
            "specialized instances: each served one request of its own hello and then idled"
            " 1.5 s; warm instances: forked, not specialized yet.",
            "fresh_interpreter_same_imports: a new Python importing what an instance has"
            " (the runtime, uvloop, httptools, flask) and then sleeping: the cost of one"
            " process per function without a zygote.",
            "supervisor RSS: VmRSS of the `fissile up` process (control API, router, executor,"
            " store), in MB (10^6 bytes), as the target is stated.",
            "The 1,000 functions are scaled to zero (never called); each has its own package"
            " (and deploy dir) and its own templated HTTP trigger.",
            "route_lookup: RouteTable.match() in this process, best case for neither: the route"
            " looked up is a template added last.",
        ],
        elapsed_s=round(time.monotonic() - started, 1),
    )
    write_results("memory", result, args.output)


if __name__ == "__main__":
    main()
