"""Edge: a function driven well past its capacity, and what its callers get.

A 50 ms function (``time.sleep``) with ``--max-scale 2`` and concurrency 1 (kept warm with
``--min-scale 2``: the overload is measured, not the cold start) can serve 2 requests at a time,
~40 a second. ``--clients`` keep-alive clients (default 40: 20 times what it can run at once)
each send requests one after another for ``--seconds``, twice:

- ``abusive``: the function's default queue bounds; a refused client (429 or 503) sends its
  next request at once;
- ``polite``: the function's queue timeout set to ``--polite-queue-timeout`` (default 0.3 s,
  less than the ~0.5 s a full queue takes to drain, so some requests wait too long); a refused
  client waits the answer's ``Retry-After`` first.

Measured: how many requests got 200, 429 (the function's queue was full) and 503 (waited past
the queue timeout), anything else (the target is none: no 504, no error), the latency of each
kind, and the supervisor's RSS (before, peak during, and a few seconds after the load).

The baseline, in the same run: bare uvicorn serving the same sleep (``asyncio.sleep`` under a
semaphore of 2, the same concurrency limit) to the same clients. It has no admission control:
every request waits its turn, so it answers only 200s, late.

    .venv/bin/python benchmarks/edge.py [--clients 40] [--seconds 10]

Prints JSON and writes it to benchmarks/results/edge.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    PYTHON,
    CpuMeter,
    Platform,
    Workdir,
    free_port,
    get_request,
    log,
    machine_info,
    memory_of,
    ratio,
    stop_process,
    summarize,
    wait_for_port,
    wait_until_quiet,
    write_results,
)

SLEEP = """\
import time

def main():
    time.sleep({seconds})
    return "Hello, world!"
"""

# The baseline: the same sleep, at most CONCURRENCY at once, the others waiting their turn.
BARE_SLEEP_APP = """\
import asyncio

SECONDS = {seconds}
LIMIT = asyncio.Semaphore({concurrency})


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    async with LIMIT:
        await asyncio.sleep(SECONDS)
    await send(
        {{
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
        }}
    )
    await send({{"type": "http.response.body", "body": b"Hello, world!"}})
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=10.0, help="of load")
    parser.add_argument("--sleep-ms", type=float, default=50.0, help="the function's run time")
    parser.add_argument("--max-scale", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument(
        "--polite-queue-timeout", default="0.3s", help="the queue timeout of the polite run"
    )
    parser.add_argument("--sandbox", default="auto", help="fissile up --sandbox (default auto)")
    parser.add_argument("--quiet-wait", type=float, default=0.0)
    parser.add_argument("--output", default=None, help="default: benchmarks/results/edge.json")
    return parser.parse_args()


def load(port: int, path: str, clients: int, seconds: float, polite: bool) -> dict[str, Any]:
    """``clients`` keep-alive clients, each sending requests back to back for ``seconds``; a
    ``polite`` one waits as long as a refusal's Retry-After says."""
    raw = get_request(path)
    latencies: dict[int, list[float]] = {}
    failures: list[str] = []
    reconnects = 0

    async def exchange(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[int, bool, float]:
        writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        close = False
        retry_after = 0.0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"retry-after":
                retry_after = float(value)
        await reader.readexactly(length)
        return int(head.split(b" ", 2)[1]), close, retry_after

    async def client(start: asyncio.Event, end: float) -> None:
        nonlocal reconnects
        await start.wait()
        writer = None
        try:
            while time.perf_counter() < end:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                begin = time.perf_counter()
                try:
                    status, close, retry_after = await exchange(reader, writer)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    failures.append(repr(exc))
                    writer.close()
                    writer = None
                    reconnects += 1
                    continue
                latencies.setdefault(status, []).append((time.perf_counter() - begin) * 1000)
                if close:
                    writer.close()
                    writer = None
                    reconnects += 1
                if polite and retry_after:
                    await asyncio.sleep(min(retry_after, max(end - time.perf_counter(), 0)))
        finally:
            if writer is not None:
                writer.close()

    async def run() -> float:
        start = asyncio.Event()
        end = time.perf_counter() + 0.05 + seconds
        tasks = [asyncio.create_task(client(start, end)) for _ in range(clients)]
        await asyncio.sleep(0.05)
        begin = time.perf_counter()
        start.set()
        await asyncio.gather(*tasks)
        return time.perf_counter() - begin

    elapsed = asyncio.run(run())
    total = sum(len(v) for v in latencies.values()) + len(failures)
    return {
        "clients": clients,
        "duration_s": round(elapsed, 3),
        "requests": total,
        "statuses": {str(k): len(v) for k, v in sorted(latencies.items())},
        "share": {str(k): round(len(v) / total, 4) for k, v in sorted(latencies.items())},
        "per_second": {str(k): round(len(v) / elapsed, 1) for k, v in sorted(latencies.items())},
        "errors": len(failures),
        "first_errors": failures[:10],
        "reconnects": reconnects,
        "latency_ms": {str(k): summarize(v) for k, v in sorted(latencies.items())},
    }


class RssSampler:
    """The supervisor's RSS every 50 ms, from another thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            memory = memory_of(self.pid)
            if memory is not None:
                self.samples.append(memory["rss_mib"])
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class BareSleep:
    """Bare uvicorn (httptools, uvloop, one worker) serving BARE_SLEEP_APP."""

    def __init__(self, workdir: Path, seconds: float, concurrency: int) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: Any = None
        app = BARE_SLEEP_APP.format(seconds=seconds, concurrency=concurrency)
        (workdir / "bare_sleep_app.py").write_text(app)

    def start(self) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "uvicorn",
                "--app-dir",
                str(self.workdir),
                "bare_sleep_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--http",
                "httptools",
                "--loop",
                "uvloop",
                "--no-access-log",
                "--log-level",
                "warning",
                "--lifespan",
                "off",
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port, 30.0, self.proc)

    def stop(self) -> dict[str, Any]:
        report = stop_process(self.proc, "uvicorn")
        self.proc = None
        return report


def run_scenario(
    platform: Platform, args: argparse.Namespace, name: str, polite: bool
) -> dict[str, Any]:
    """One load on the platform's ``edge`` function: statuses, latencies, supervisor RSS."""
    assert platform.proc is not None
    pid = platform.proc.pid
    rss_before = memory_of(pid)
    log(f"fissile, {name}: {args.clients} clients for {args.seconds:g}s")
    meter = CpuMeter().start()
    with RssSampler(pid) as rss:
        result = load(platform.port, "/edge", args.clients, args.seconds, polite)
    result["cpu"] = meter.stop()
    time.sleep(3.0)  # the queue drains, the autoscaler ticks
    result["supervisor_rss_mib"] = {
        "before": rss_before and rss_before["rss_mib"],
        "peak": max(rss.samples, default=None),
        "after": (memory_of(pid) or {}).get("rss_mib"),
    }
    function = platform.client.get("functions", "edge")
    result["function_status_after"] = function["status"]
    result["queue_limit"] = function["status"].get("queue_limit")
    result["queue_timeout_s"] = function.get("queue_timeout") or function["timeout"]
    result["serves_afterwards"] = load(platform.port, "/edge", 1, 0.5, False)["statuses"]
    log(f"  statuses {result['statuses']}, errors {result['errors']}")
    return result


def met(result: dict[str, Any]) -> bool:
    expected = {"200", "429", "503"}
    return (
        set(result["statuses"]) <= expected
        and result["errors"] == 0
        and set(result["serves_afterwards"]) == {"200"}
        and result["function_status_after"]["restarts"] == 0
    )


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    result: dict[str, Any] = {
        "benchmark": "edge",
        "machine": machine_info(),
        "parameters": vars(args),
    }
    settings: dict[str, Any] = {
        "max_scale": args.max_scale,
        "min_scale": args.max_scale,
        "concurrency": args.concurrency,
    }
    seconds = args.sleep_ms / 1000
    capacity = args.max_scale * args.concurrency / seconds
    fissile: dict[str, Any] = {}
    with Workdir("fissile-bench-edge-") as workdir:
        if args.quiet_wait > 0:
            result["quiet_wait"] = wait_until_quiet(args.quiet_wait)
        platform = Platform(workdir, ("--sandbox", args.sandbox))
        platform.start()
        try:
            source = SLEEP.format(seconds=seconds)
            platform.create_function("edge", source, route="/edge", **settings)
            deadline = time.monotonic() + 120
            while platform.client.get("functions", "edge")["status"]["instances"] < args.max_scale:
                if time.monotonic() > deadline:
                    raise TimeoutError("the function's instances did not start")
                time.sleep(0.1)
            fissile["abusive"] = run_scenario(platform, args, "abusive", polite=False)
            spec = platform.client.get("functions", "edge")
            meta = ("status", "created_at", "updated_at", "generation")
            spec = {k: v for k, v in spec.items() if k not in meta}
            platform.client.update(
                "functions", "edge", {**spec, "queue_timeout": args.polite_queue_timeout}
            )
            fissile["polite"] = run_scenario(platform, args, "polite", polite=True)
        finally:
            fissile_stop = platform.stop()
        fissile["platform_stop"] = fissile_stop
        log("bare uvicorn: the same load on the same sleep, 2 at a time")
        bare_server = BareSleep(workdir, seconds, args.max_scale * args.concurrency)
        bare_server.start()
        try:
            meter = CpuMeter().start()
            with RssSampler(bare_server.proc.pid) as rss:
                bare = load(bare_server.port, "/", args.clients, args.seconds, False)
            bare["cpu"] = meter.stop()
            bare["server_rss_mib"] = {"peak": max(rss.samples, default=None)}
        finally:
            bare["stop"] = bare_server.stop()
        log(f"  statuses {bare['statuses']}, errors {bare['errors']}")
    b200 = bare["latency_ms"].get("200", {})
    ratios: dict[str, Any] = {}
    for name in ("abusive", "polite"):
        f200 = fissile[name]["latency_ms"].get("200", {})
        ratios[name] = {
            "ok_per_second_fissile_over_bare": ratio(
                fissile[name]["per_second"].get("200"), bare["per_second"].get("200")
            ),
            "p50_200_fissile_over_bare": ratio(f200.get("p50"), b200.get("p50")),
            "p99_200_fissile_over_bare": ratio(f200.get("p99"), b200.get("p99")),
        }
    result.update(
        fissile=fissile,
        baselines={"bare_uvicorn_semaphore": bare},
        ratios=ratios,
        target={
            "description": "only 200, 429 and 503; no error, no restart; 200 right afterwards",
            "abusive": met(fissile["abusive"]),
            "polite": met(fissile["polite"]),
            "met": met(fissile["abusive"]) and met(fissile["polite"]),
        },
        notes=[
            f"The function sleeps {args.sleep_ms:g} ms per call, {args.concurrency} call(s) per"
            f" instance, at most {args.max_scale} instances (kept warm): ~{capacity:.0f}"
            " calls a second at best.",
            "Clients are closed-loop keep-alive connections in one Python process. abusive:"
            " a refused client asks again at once, with the function's default queue bounds;"
            " polite: it waits the Retry-After, and the queue timeout is"
            f" {args.polite_queue_timeout}.",
            "429: the function's queue was full (refused at once); 503: waited past its queue"
            " timeout. Both carry Retry-After; neither kills an instance.",
            "bare_uvicorn_semaphore: one uvicorn worker, the same sleep under"
            " asyncio.Semaphore(max_scale x concurrency); no admission control, so every"
            " request waits (200s only, with the queueing in their latency).",
            "supervisor_rss_mib: RSS of the fissile up process (router, API, executor), not"
            " of its zygotes or instances.",
        ],
        elapsed_s=round(time.monotonic() - started, 1),
    )
    write_results("edge", result, args.output)


if __name__ == "__main__":
    main()
