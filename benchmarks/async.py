"""Asynchronous invocations: how many calls the front door accepts per second, next to the
synchronous path in the same run, and how long a caller waits from its POST to the result
pushed over the invocation's websocket.

Measured, on one platform with one native hello function (``def main(request)``):

* throughput under wrk (default 2 threads, 32 connections, 10 s after a 2 s warm-up), POSTs
  with a small JSON body: ``/function/hello`` (synchronous: the answer is the function's) and
  ``/async-function/hello`` (each ``202`` means the invocation was committed to SQLite).
  Afterwards the benchmark waits for the backlog to drain and checks, in the invocations
  database, that every accepted invocation exists and succeeded: nothing accepted was lost;
* end-to-end latency, one or more clients each doing in a loop: POST /async-function/hello on a
  keep-alive connection, open the ``ws_url`` of the 202 (a new connection, as a browser does),
  read until the ``result`` message. Split into POST -> 202 and 202 -> result. The synchronous
  POST /function/hello on a keep-alive connection is measured by the same clients as a
  reference.

    .venv/bin/python benchmarks/async.py [--duration 10] [--connections 32] [--samples 300]

Prints JSON and writes it to benchmarks/results/async.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    HELLO_BODY,
    WRK_SCRIPT,
    CpuMeter,
    Platform,
    RawHTTP,
    Workdir,
    log,
    machine_info,
    ratio,
    run_wrk,
    summarize,
    wait_until_quiet,
    write_results,
    wrk_path,
    wrk_version,
)

TARGET_ACCEPTED_PER_S = 2000.0
HELLO = 'def main(request):\n    return "Hello, world!"\n'
BODY = b'{"n": 1}'
# wrk sends every request as a POST with this body; WRK_SCRIPT's done() prints the report.
WRK_POST = (
    'wrk.method = "POST"\n'
    f"wrk.body = '{BODY.decode()}'\n"
    'wrk.headers["Content-Type"] = "application/json"\n' + WRK_SCRIPT
)
FINAL = ("succeeded", "failed", "timed_out", "cancelled", "dead")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each load run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each run")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections")
    parser.add_argument("--max-scale", type=int, default=10, help="the hello's max_scale")
    parser.add_argument(
        "--samples", type=int, default=300, help="end-to-end round trips per latency run"
    )
    parser.add_argument(
        "--latency-clients",
        type=lambda text: [int(x) for x in text.split(",") if x],
        default=[1, 8],
        help="concurrent clients of each latency run, comma-separated (default 1,8)",
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=300.0, help="max seconds to wait for the backlog"
    )
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="wait up to S seconds for a quiet machine before each run",
    )
    parser.add_argument("--output", default=None, help="default: benchmarks/results/async.json")
    return parser.parse_args()


def post_request(port: int, path: str) -> bytes:
    # The Host header is where the 202's ws_url points.
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: fissile-bench\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


# -- load ---------------------------------------------------------------------------------


def run_wrk_post(
    wrk: str, url: str, args: argparse.Namespace, duration: float, workdir: Path
) -> dict[str, Any]:
    return run_wrk(wrk, url, args.threads, args.connections, duration, workdir, lua=WRK_POST)


def run_pyload_post(port: int, path: str, connections: int, duration: float) -> dict[str, Any]:
    """Fallback without wrk: ``connections`` asyncio keep-alive clients in this process; far
    weaker than wrk, so its numbers are a floor."""
    raw = post_request(port, path)
    latencies: list[float] = []
    counts = {"non_2xx": 0, "errors": 0}

    async def client(stop_at: float) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            counts["errors"] += 1
            return
        try:
            while time.perf_counter() < stop_at:
                begin = time.perf_counter()
                writer.write(raw)
                status, _ = await read_response(reader)
                latencies.append((time.perf_counter() - begin) * 1000)
                if not 200 <= status < 300:
                    counts["non_2xx"] += 1
        except (OSError, asyncio.IncompleteReadError):
            counts["errors"] += 1
        finally:
            writer.close()

    async def main() -> float:
        begin = time.perf_counter()
        await asyncio.gather(*(client(begin + duration) for _ in range(connections)))
        return time.perf_counter() - begin

    elapsed = asyncio.run(main())
    return {
        "tool": "python-asyncio (wrk missing or --no-wrk)",
        "connections": connections,
        "duration_s": round(elapsed, 3),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "non_2xx": counts["non_2xx"],
        "errors": {"other": counts["errors"]},
        "latency_ms": summarize(latencies),
    }


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return int(lines[0].split(b" ", 2)[1]), await reader.readexactly(length)


class Load:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.wrk = None if args.no_wrk else wrk_path()

    def describe(self) -> dict[str, Any]:
        if self.wrk:
            return {"tool": "wrk", "path": self.wrk, "version": wrk_version(self.wrk)}
        return {"tool": "python-asyncio", "caveat": "one Python process; numbers are a floor"}

    def run(self, port: int, path: str, duration: float) -> dict[str, Any]:
        if self.wrk:
            url = f"http://127.0.0.1:{port}{path}"
            return run_wrk_post(self.wrk, url, self.args, duration, self.workdir)
        return run_pyload_post(port, path, self.args.connections, duration)


# -- the invocations database -------------------------------------------------------------


class Ledger:
    """Reads the platform's invocations database (read-only queries) to check what it holds."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "invocations.db"

    def counts(self) -> dict[str, int]:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute("SELECT status, COUNT(*) FROM invocations GROUP BY status")
            return {status: count for status, count in rows}
        finally:
            db.close()

    def wait_drained(self, timeout: float) -> tuple[dict[str, int], float]:
        """Wait until nothing is queued or running; returns the counts and seconds waited."""
        begin = time.monotonic()
        while True:
            counts = self.counts()
            if not counts.get("queued") and not counts.get("running"):
                return counts, time.monotonic() - begin
            if time.monotonic() - begin > timeout:
                return counts, time.monotonic() - begin
            time.sleep(0.2)


# -- throughput ---------------------------------------------------------------------------


def throughput(
    args: argparse.Namespace, load: Load, platform: Platform, ledger: Ledger
) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for key, path in (("sync", "/function/hello"), ("async", "/async-function/hello")):
        quiet = wait_until_quiet(args.quiet_wait) if args.quiet_wait > 0 else None
        if args.warmup > 0:
            load.run(platform.port, path, args.warmup)
            if key == "async":
                # The warm-up's backlog must not run during the measured run.
                ledger.wait_drained(args.drain_timeout)
        before = ledger.counts() if key == "async" else {}
        meter = CpuMeter().start()
        run = load.run(platform.port, path, args.duration)
        run["cpu"] = meter.stop()
        run["path"] = path
        if quiet is not None:
            run["quiet_wait"] = quiet
        if key == "async":
            run.update(check_ledger(args, run, ledger, before))
        answered = run["requests"] - run["non_2xx"]
        run["answered_2xx_per_s"] = round(answered / run["duration_s"], 1)
        log(
            f"  POST {path}: {run['answered_2xx_per_s']:.0f} 2xx/s,"
            f" p50 {run['latency_ms']['p50']:.2f} ms, p99 {run['latency_ms']['p99']:.2f} ms,"
            f" non-2xx {run['non_2xx']}, errors {run['errors']}"
            f" (other processes: {run['cpu']['other_processes_pct']}% CPU)"
        )
        runs[key] = run
    return runs


def check_ledger(
    args: argparse.Namespace, run: dict[str, Any], ledger: Ledger, before: dict[str, int]
) -> dict[str, Any]:
    """After the run: how far execution kept up, how long the backlog took to drain, and
    whether every accepted invocation is in the database and succeeded."""
    at_end = ledger.counts()
    added = sum(at_end.values()) - sum(before.values())
    done_during = sum(at_end.get(s, 0) - before.get(s, 0) for s in FINAL)
    drained, waited = ledger.wait_drained(args.drain_timeout)
    accepted = run["requests"] - run["non_2xx"]
    succeeded = drained.get("succeeded", 0) - before.get("succeeded", 0)
    log(
        f"  accepted {accepted} (wrk), {added} new records; {done_during} finished during the"
        f" run, the rest in {waited:.1f} s"
    )
    return {
        "accepted": accepted,
        "accepted_per_s": round(accepted / run["duration_s"], 1),
        "records_added": added,
        # wrk does not count requests still in flight when it stops: the server may have
        # accepted up to one per connection more than wrk saw.
        "records_not_seen_by_wrk": added - accepted,
        "lost": max(0, accepted - added),
        "finished_during_run": done_during,
        "finished_during_run_per_s": round(done_during / run["duration_s"], 1),
        "backlog_at_end": added - done_during,
        "drain_s": round(waited, 2),
        "drain_per_s": round((added - done_during) / waited, 1) if waited > 0 else None,
        "drained": not drained.get("queued") and not drained.get("running"),
        "succeeded_after_drain": succeeded,
        "not_succeeded": {s: n - before.get(s, 0) for s, n in drained.items() if s != "succeeded"},
    }


# -- end-to-end latency -------------------------------------------------------------------


async def e2e_client(port: int, samples: int, out: dict[str, list[float]]) -> None:
    from websockets.asyncio.client import connect

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sync_reader, sync_writer = await asyncio.open_connection("127.0.0.1", port)
    async_request, sync_request = (
        post_request(port, "/async-function/hello"),
        post_request(port, "/function/hello"),
    )
    try:
        for _ in range(samples):
            begin = time.perf_counter()
            writer.write(async_request)
            status, body = await read_response(reader)
            accepted = time.perf_counter()
            if status != 202:
                raise RuntimeError(f"POST /async-function/hello: HTTP {status} {body[:200]!r}")
            document = json.loads(body)
            async with connect(document["ws_url"], compression=None) as socket:
                opened = time.perf_counter()
                first = True
                async for raw in socket:
                    message = json.loads(raw)
                    if message["event"] == "result":
                        break
                    first = False
                done = time.perf_counter()
            invocation = message["invocation"]
            response = invocation["response"] or {}
            if invocation["status"] != "succeeded" or response.get("body") != HELLO_BODY.decode():
                raise RuntimeError(f"unexpected result: {message}")
            out["post_to_result"].append((done - begin) * 1000)
            out["post_to_202"].append((accepted - begin) * 1000)
            out["202_to_ws_open"].append((opened - accepted) * 1000)
            out["ws_open_to_result"].append((done - opened) * 1000)
            out["result_was_first_message"].append(1.0 if first else 0.0)

            begin = time.perf_counter()
            sync_writer.write(sync_request)
            status, body = await read_response(sync_reader)
            if status != 200 or body != HELLO_BODY:
                raise RuntimeError(f"POST /function/hello: HTTP {status} {body[:200]!r}")
            out["sync_request"].append((time.perf_counter() - begin) * 1000)
    finally:
        writer.close()
        sync_writer.close()


def latency(args: argparse.Namespace, platform: Platform, clients: int) -> dict[str, Any]:
    keys = (
        "post_to_result",
        "post_to_202",
        "202_to_ws_open",
        "ws_open_to_result",
        "result_was_first_message",
        "sync_request",
    )
    samples: dict[str, list[float]] = {key: [] for key in keys}
    per_client = max(1, args.samples // clients)

    async def main() -> None:
        # A short warm-up outside the figures: instances, connections, websocket code paths.
        await e2e_client(platform.port, 10, {key: [] for key in keys})
        await asyncio.gather(
            *(e2e_client(platform.port, per_client, samples) for _ in range(clients))
        )

    quiet = wait_until_quiet(args.quiet_wait) if args.quiet_wait > 0 else None
    meter = CpuMeter().start()
    began = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - began
    result: dict[str, Any] = {
        "clients": clients,
        "round_trips": len(samples["post_to_result"]),
        "elapsed_s": round(elapsed, 2),
        "cpu": meter.stop(),
    }
    if quiet is not None:
        result["quiet_wait"] = quiet
    first = samples.pop("result_was_first_message")
    result["result_was_first_message_pct"] = round(100 * sum(first) / max(len(first), 1), 1)
    result["ms"] = {key: summarize(values) for key, values in samples.items()}
    e2e, sync = result["ms"]["post_to_result"], result["ms"]["sync_request"]
    result["e2e_p50_over_sync_p50"] = ratio(e2e["p50"], sync["p50"])
    log(
        f"  {clients} client(s): POST -> websocket result p50 {e2e['p50']:.2f} ms,"
        f" p99 {e2e['p99']:.2f} ms (sync POST p50 {sync['p50']:.2f} ms)"
    )
    return result


# -- main ---------------------------------------------------------------------------------


def check(port: int) -> None:
    client = RawHTTP.tcp(port)
    try:
        status, body = client.request(post_request(port, "/function/hello"))
        if status != 200 or body != HELLO_BODY:
            raise RuntimeError(f"POST /function/hello: HTTP {status} {body[:200]!r}")
        status, body = client.request(post_request(port, "/async-function/hello"))
        if status != 202:
            raise RuntimeError(f"POST /async-function/hello: HTTP {status} {body[:200]!r}")
    finally:
        client.close()


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    result: dict[str, Any] = {"benchmark": "async", "machine": machine_info()}
    with Workdir("fissile-bench-async-") as workdir:
        load = Load(args, workdir)
        result["parameters"] = {
            **{k: v for k, v in vars(args).items() if k != "output"},
            "load_generator": load.describe(),
            "request_body": BODY.decode(),
        }
        platform = Platform(workdir)
        platform.start()
        try:
            platform.create_function("hello", HELLO, max_scale=args.max_scale)
            check(platform.port)
            ledger = Ledger(platform.data_dir)
            ledger.wait_drained(args.drain_timeout)
            log(f"throughput: {args.connections} connections, {args.duration:g} s per run")
            runs = throughput(args, load, platform, ledger)
            log(f"end-to-end latency: {args.samples} round trips per run")
            latencies = {f"clients_{n}": latency(args, platform, n) for n in args.latency_clients}
            result["function_status_after"] = platform.client.get("functions", "hello").get(
                "status"
            )
        finally:
            result["platform"] = {"startup_s": platform.startup_seconds, "stop": platform.stop()}
    accepted_per_s = runs["async"]["accepted_per_s"]
    result.update(
        throughput=runs,
        comparison={
            "sync_2xx_per_s": runs["sync"]["answered_2xx_per_s"],
            "async_accepted_per_s": accepted_per_s,
            "async_over_sync": ratio(accepted_per_s, runs["sync"]["answered_2xx_per_s"]),
            "async_executed_during_run_per_s": runs["async"]["finished_during_run_per_s"],
            "async_executed_after_run_per_s": runs["async"]["drain_per_s"],
        },
        latency=latencies,
        target={
            "accepted_per_s_at_least": TARGET_ACCEPTED_PER_S,
            "accepted_per_s": accepted_per_s,
            "met": accepted_per_s >= TARGET_ACCEPTED_PER_S,
            "nothing_lost": runs["async"]["lost"] == 0
            and runs["async"]["drained"]
            and not runs["async"]["not_succeeded"],
        },
        notes=[
            f"{os.cpu_count()} CPUs, nothing pinned: wrk, the platform process (router, front"
            " door, async workers, control API and executor on one event loop) and the"
            " instances compete for them.",
            "Accepted means answered 202: the invocation's row was inserted in the invocations"
            " database (SQLite, WAL, synchronous=NORMAL) before the answer was sent.",
            "During the async run the platform also executes what it accepts (workers share the"
            " event loop and CPUs with the front door): finished_during_run_per_s is how far"
            " execution kept up; the backlog drains afterwards (drain_s), and the check after"
            " it (lost, succeeded_after_drain, not_succeeded) compares the database with wrk's"
            " count of 202s.",
            "The sync run is measured first, on an idle platform; the async run follows once"
            " its warm-up's backlog has drained.",
            "Latency: each round trip is POST /async-function/hello on a keep-alive connection,"
            " then a new websocket connection to ws_url (handshake included, as a browser),"
            " read until the result message. result_was_first_message_pct: how often the"
            " invocation had already finished when the websocket subscribed (the socket then"
            " sends the result at once, without a status message first).",
            "sync_request: POST /function/hello on a keep-alive connection by the same"
            " clients, interleaved with the async round trips, as a reference.",
            "cpu.other_processes_pct: CPU used during a run by processes this benchmark did not"
            " start; anything well above 0 makes that run pessimistic.",
        ],
        elapsed_s=round(time.monotonic() - started, 1),
    )
    write_results("async", result, args.output)


if __name__ == "__main__":
    main()
