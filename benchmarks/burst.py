"""Burst: 0 -> 50 concurrent clients at once on a cold function with ``--max-scale 8``.

A function that was never called (no instance) gets ``--clients`` keep-alive clients at the same
moment, each sending ``--requests`` requests one after another. Every answer is checked; errors
and non-200 answers are counted (the target is zero). The function's status (current/desired
instances, queue, panic) is sampled every 50 ms through the API meanwhile, and the autoscaler's
decisions are read from the function's log afterwards. The same burst against a bare uvicorn app
(already running: it has nothing to scale) is the baseline, in the same run.

The function does a little work (``--work-ms`` of CPU per request, default 1 ms), so that one
instance cannot absorb the burst alone.

    .venv/bin/python benchmarks/burst.py [--clients 50] [--requests 40]

Prints JSON and writes it to benchmarks/results/burst.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    BareUvicorn,
    CpuMeter,
    Platform,
    Workdir,
    get_request,
    log,
    machine_info,
    ratio,
    summarize,
    wait_until_quiet,
    write_results,
)

WORK = """\
import time

def main():
    end = time.perf_counter() + {seconds}
    while time.perf_counter() < end:
        pass
    return "Hello, world!"
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="per client, sequential")
    parser.add_argument("--max-scale", type=int, default=8)
    parser.add_argument("--work-ms", type=float, default=1.0, help="CPU per request")
    parser.add_argument("--sandbox", default="auto", help="fissile up --sandbox (default auto)")
    parser.add_argument("--quiet-wait", type=float, default=0.0)
    parser.add_argument("--output", default=None, help="default: benchmarks/results/burst.json")
    return parser.parse_args()


def burst(port: int, path: str, clients: int, requests: int) -> dict[str, Any]:
    """``clients`` asyncio keep-alive clients released at once; every latency and failure."""
    latencies: list[float] = []
    firsts: list[float] = []
    failures: list[str] = []
    statuses: dict[int, int] = {}
    raw = get_request(path)

    async def client(start: asyncio.Event) -> None:
        await start.wait()
        reader = writer = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for i in range(requests):
                begin = time.perf_counter()
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                elapsed = (time.perf_counter() - begin) * 1000
                status = int(head.split(b" ", 2)[1])
                statuses[status] = statuses.get(status, 0) + 1
                if status != 200 or body != b"Hello, world!":
                    failures.append(f"HTTP {status}: {body[:200]!r}")
                    continue
                latencies.append(elapsed)
                if i == 0:
                    firsts.append(elapsed)
        except (OSError, asyncio.IncompleteReadError) as exc:
            failures.append(repr(exc))
        finally:
            if writer is not None:
                writer.close()

    async def run() -> float:
        start = asyncio.Event()
        tasks = [asyncio.create_task(client(start)) for _ in range(clients)]
        await asyncio.sleep(0.05)  # every client waits on the event
        begin = time.perf_counter()
        start.set()
        await asyncio.gather(*tasks)
        return time.perf_counter() - begin

    elapsed = asyncio.run(run())
    return {
        "clients": clients,
        "requests_per_client": requests,
        "sent": clients * requests,
        "served_200": len(latencies),
        "errors": len(failures),
        "first_failures": failures[:10],
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "duration_s": round(elapsed, 3),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms": summarize(latencies),
        "first_request_per_client_ms": summarize(firsts),
        "samples_ms": [round(v, 3) for v in latencies],
    }


class StatusSampler:
    """The function's status every 50 ms, from another thread, while the burst runs."""

    def __init__(self, platform: Platform, name: str) -> None:
        self.platform = platform
        self.name = name
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.begin = 0.0

    def _run(self) -> None:
        from fissile.client import Client

        with Client(self.platform.api_url, token=self.platform.token) as client:
            while not self._stop.is_set():
                status = client.get("functions", self.name)["status"]
                self.samples.append(
                    {
                        "t_ms": round((time.perf_counter() - self.begin) * 1000, 1),
                        **{
                            key: status.get(key)
                            for key in ("instances", "desired", "starting", "queued", "panic")
                        },
                    }
                )
                self._stop.wait(0.05)

    def __enter__(self) -> StatusSampler:
        self.begin = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    result: dict[str, Any] = {
        "benchmark": "burst",
        "machine": machine_info(),
        "parameters": vars(args),
    }
    source = WORK.format(seconds=args.work_ms / 1000)
    with Workdir("fissile-bench-burst-") as workdir:
        if args.quiet_wait > 0:
            result["quiet_wait"] = wait_until_quiet(args.quiet_wait)
        platform = Platform(workdir, ("--sandbox", args.sandbox))
        platform.start()
        meter = CpuMeter().start()
        try:
            platform.create_function("burst", source, route="/burst", max_scale=args.max_scale)
            status = platform.client.get("functions", "burst")["status"]
            assert status["instances"] == 0, status
            log(f"fissile: {args.clients} clients x {args.requests} requests on a cold function")
            with StatusSampler(platform, "burst") as sampler:
                fissile = burst(platform.port, "/burst", args.clients, args.requests)
                time.sleep(0.2)
            fissile["cpu"] = meter.stop()
            fissile["status_samples"] = sampler.samples
            fissile["status_after"] = platform.client.get("functions", "burst")["status"]
            text = b"".join(platform.client.logs("burst", tail=200)).decode(errors="replace")
            fissile["autoscaler_log"] = [
                line for line in text.splitlines() if "autoscaler:" in line
            ][:40]
            fissile["max_instances_seen"] = max(
                (s["instances"] or 0 for s in sampler.samples), default=None
            )
        finally:
            stop = platform.stop()
        fissile["platform_stop"] = stop
        log(
            f"  {fissile['served_200']}/{fissile['sent']} served, {fissile['errors']} errors,"
            f" p50 {fissile['latency_ms'].get('p50')} ms, p99 {fissile['latency_ms'].get('p99')}"
        )
        log("bare uvicorn: the same burst")
        bare_server = BareUvicorn(workdir)
        bare_server.start()
        try:
            meter = CpuMeter().start()
            bare = burst(bare_server.port, "/", args.clients, args.requests)
            bare["cpu"] = meter.stop()
        finally:
            bare_server.stop()
    f_lat, b_lat = fissile["latency_ms"], bare["latency_ms"]
    result.update(
        fissile=fissile,
        baselines={"bare_uvicorn": bare},
        ratios={
            "p50_fissile_over_bare": ratio(f_lat.get("p50"), b_lat.get("p50")),
            "p99_fissile_over_bare": ratio(f_lat.get("p99"), b_lat.get("p99")),
        },
        target={
            "errors_at_most": 0,
            "errors": fissile["errors"],
            "all_served": fissile["served_200"] == fissile["sent"],
            "p99_ms": f_lat.get("p99"),
            "max_instances_seen": fissile["max_instances_seen"],
            "met": fissile["errors"] == 0 and fissile["served_200"] == fissile["sent"],
        },
        notes=[
            f"{os.cpu_count()} CPUs shared by the clients (one Python process), the platform"
            " and its instances.",
            f"The function burns {args.work_ms} ms of CPU per request (a busy loop), concurrency"
            f" 1 per instance: the burst needs several of the {args.max_scale} instances.",
            "The function was never called before the burst: its first requests wait for"
            " instances (taken from the warm pool, then forked) while the queue holds them.",
            "bare_uvicorn: the same clients against an already running uvicorn serving the"
            " same body without the work (one process: nothing to scale).",
            re.sub(
                r"\s+",
                " ",
                """status_samples: the function's status from the control API every 50 ms
                during the burst (instances, desired, starting, queued, panic).""",
            ),
        ],
        elapsed_s=round(time.monotonic() - started, 1),
    )
    write_results("burst", result, args.output)


if __name__ == "__main__":
    main()
