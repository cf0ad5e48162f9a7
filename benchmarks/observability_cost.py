"""The per-request cost of request metrics and the access log on the router's hot path, in
process and deterministic enough to compare builds: the functions a warm request runs with
them on against ``--no-metrics --access-log off``, timed with ``timeit``, in µs, and as a share
of what the router's process spends on a request (measured by ``warm.py --only-cost``; given
here with ``--router-cpu-us``, or read from its results).

Timed per request, as the router runs it (``fissile/router/protocol.py``, ``proxy.py``):

* ``off``: the ``Trip`` (arrival, instance), ``_count`` with metrics off (the duration only);
* ``on``: the same with metrics on, and the protocol's access log record and ``AccessLog.add``;
* ``writer``: what the access log's writer process spends on a record (unmarshal, format),
  and what the router spends marshalling it: not on the hot path, but CPU of the machine.

Warm requests under wrk mostly wait a little for an instance (32 connections, 10 instances):
half the trips here were queued (warm, not cold), half were not.

    .venv/bin/python benchmarks/observability_cost.py [--router-cpu-us 115]

Prints JSON and writes it to benchmarks/results/observability_cost.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import marshal
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import RESULTS, log, machine_info, write_results

from fissile.observability.access import AccessLog
from fissile.observability.metrics import Metrics
from fissile.router.protocol import RouterProtocol
from fissile.router.proxy import Answer, Trip, _count

ROUTER_CPU_US = 115.0  # the router's process per warm request (docs/observability.md)


class _Instance:
    id = "i3"
    ready_at = 0.0


class _Protocol:
    """The attributes ``RouterProtocol._log`` reads of the connection."""

    def __init__(self, access_log: AccessLog | None, trip: Trip) -> None:
        self.access_log = access_log
        self.trip = trip
        self.function = "hello"
        self.route = "hello-route"
        self.method = "GET"
        self.path = "/hello"
        self.client = "127.0.0.1"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--router-cpu-us",
        type=float,
        default=None,
        help="the router's CPU per request with metrics and the access log off (default: the"
        f" median of benchmarks/results/warm.json's cost runs, else {ROUTER_CPU_US})",
    )
    parser.add_argument("--number", type=int, default=20000, help="requests per timing")
    parser.add_argument("--repeat", type=int, default=15, help="timings (the minimum is kept)")
    parser.add_argument("--output", default=None)
    return parser.parse_args()


def router_cpu_us(given: float | None) -> tuple[float, str]:
    if given is not None:
        return given, "--router-cpu-us"
    try:
        cost = json.loads((RESULTS / "warm.json").read_text())["observability_cost"]
        return statistics.median(cost["router_cpu_us_per_request"]["off"]), "warm.json"
    except (OSError, KeyError, TypeError, ValueError):
        return ROUTER_CPU_US, "default"


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    metrics_on, metrics_off = Metrics(), Metrics()
    metrics_off.enabled = False
    executor_on: Any = type("Executor", (), {"metrics": metrics_on})()
    executor_off: Any = type("Executor", (), {"metrics": metrics_off})()
    pool_on: Any = type("Pool", (), {"metrics": metrics_on.function("hello"), "name": "hello"})()
    pool_off: Any = type("Pool", (), {"metrics": metrics_off.function("hello"), "name": "hello"})()
    access = AccessLog(workdir / "access.log", batch=10**9, max_pending=10**9)
    access.invocation_prefix = "5f2c9a1e"
    instance = _Instance()
    result = Answer(200, "ok", "hello")
    log_record = RouterProtocol._log
    monotonic = time.monotonic
    trace = b"4bf92f3577b34da6a3ce929d0e0e4736"

    def request_off() -> None:
        for queued in (False, True):
            trip = Trip(monotonic())
            trip.served(instance, queued)  # type: ignore[arg-type]
            trip.invocation = 42
            trip.trace = trace
            _count(executor_off, pool_off, trip, 200)

    def request_on() -> None:
        for queued in (False, True):
            trip = Trip(monotonic())
            trip.served(instance, queued)  # type: ignore[arg-type]
            trip.invocation = 42
            trip.trace = trace
            _count(executor_on, pool_on, trip, 200)
            log_record(_Protocol(access, trip), result)  # type: ignore[arg-type]

    def request_off_protocol() -> None:
        # The same fake connection object, so that only the work differs.
        for queued in (False, True):
            trip = Trip(monotonic())
            trip.served(instance, queued)  # type: ignore[arg-type]
            trip.invocation = 42  # encode_forward's, either way
            trip.trace = trace
            _count(executor_off, pool_off, trip, 200)
            _Protocol(None, trip)

    def timed(function: Any) -> float:
        best = []
        for _ in range(args.repeat):
            access._pending.clear()
            best.append(timeit.timeit(function, number=args.number))
        access._pending.clear()
        return min(best) / args.number / 2 * 1e6  # µs per request (two per call)

    async def measure() -> tuple[dict[str, float], list[Any]]:
        # AccessLog.add arms its timer on the running loop; it never fires within a timing.
        times = {
            "off_us": timed(request_off_protocol),
            "off_bare_us": timed(request_off),
            "on_us": timed(request_on),
        }
        # The writer: a batch as the router sends it, unmarshalled and formatted there.
        trips = []
        for queued in (False, True) * 512:
            trip = Trip(monotonic())
            trip.served(instance, queued)  # type: ignore[arg-type]
            trip.invocation, trip.trace = 42, trace
            trips.append(trip)
            _count(executor_on, pool_on, trip, 200)
        batch = _records(access, trips, result)
        if access._timer is not None:
            access._timer.cancel()
            access._timer = None
        return times, batch

    times, batch = asyncio.run(measure())
    payload = marshal.dumps((0, batch))
    offset = time.time() - time.monotonic()
    marshal_us = min(timeit.repeat(lambda: marshal.dumps((0, batch)), number=20, repeat=5))
    unmarshal_us = min(timeit.repeat(lambda: marshal.loads(payload), number=20, repeat=5))
    format_us = min(timeit.repeat(lambda: access.format_lines(batch, offset), number=20, repeat=5))
    per = 20 * len(batch) / 1e6
    router_us, source = router_cpu_us(args.router_cpu_us)
    hot = times["on_us"] - times["off_us"]
    writer = (unmarshal_us + format_us) / per
    marshal_per = marshal_us / per
    return {
        "router_cpu_us_per_request": router_us,
        "router_cpu_us_source": source,
        "hot_path_us": {key: round(value, 3) for key, value in times.items()},
        "hot_path_cost_us": round(hot, 3),
        "marshal_us_per_record": round(marshal_per, 3),
        "writer_us_per_record": round(writer, 3),
        "hot_path_cost_pct": round(hot / router_us * 100, 2),
        "router_cost_pct": round((hot + marshal_per) / router_us * 100, 2),
        "total_cost_pct": round((hot + marshal_per + writer) / router_us * 100, 2),
    }


def _records(access: AccessLog, trips: list[Trip], result: Answer) -> list[Any]:
    """The records the protocol adds for ``trips``."""
    access._pending.clear()
    for trip in trips:
        RouterProtocol._log(_Protocol(access, trip), result)  # type: ignore[arg-type]
    records, access._pending = access._pending, []
    return records


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="fissile-bench-obs-") as workdir:
        costs = bench(args, Path(workdir))
    log(
        f"hot path: {costs['hot_path_us']['on_us']:.2f} µs on,"
        f" {costs['hot_path_us']['off_us']:.2f} off per request: +{costs['hot_path_cost_us']} µs,"
        f" {costs['hot_path_cost_pct']}% of the router's {costs['router_cpu_us_per_request']} µs;"
        f" with marshalling {costs['router_cost_pct']}%; with the writer"
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
