"""Cold start: latency of the first request to a freshly created function, against what a cold
start costs without a zygote (a fresh ``python -c`` process, a fresh uvicorn server).

Each iteration creates a new function (new source, so a new package and deploy dir: nothing is
cached from the previous one) through the control API, then times — from the client — the first
HTTP request to it through the router, then a few warm requests on the same connection. The API
calls are timed separately ("create latency"). Iterations go round four contracts, each
detected by ``auto``: Fission style ``def main(): return "Hello, world!"``, native ``def
main(request)``, AWS Lambda ``lambda_handler(event, context)`` and Fission's FastAPI
``main(request: fastapi.Request)``; each must meet the targets on its own.

    .venv/bin/python benchmarks/coldstart.py [--iterations 50]

Prints JSON and writes it to benchmarks/results/coldstart.json.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    HELLO_BODY,
    PYTHON,
    BareUvicorn,
    CpuMeter,
    Platform,
    RawHTTP,
    Workdir,
    free_port,
    get_request,
    log,
    machine_info,
    ratio,
    summarize,
    wait_until_quiet,
    write_results,
)

TARGET_P50_MS = 5.0
TARGET_P99_MS = 20.0

VARIANTS: dict[str, tuple[str, bytes]] = {  # name: (source, expected body)
    "fission_style": ('def main():\n    return "Hello, world!"\n', HELLO_BODY),
    "native": ('def main(request):\n    return "hello"\n', b"hello"),
    # As AWS names them: lambda_function.py, entrypoint lambda_function.lambda_handler.
    "lambda": (
        'def lambda_handler(event, context):\n    return {"statusCode": 200, "body": "hello"}\n',
        b"hello",
    ),
    "fission_fastapi": (
        "from fastapi import Request, Response\n\n\n"
        'def main(request: Request):\n    return Response("hello", media_type="text/plain")\n',
        b"hello",
    ),
}
#: How each variant's function is created beyond its source (file name, settings).
CREATE: dict[str, dict[str, Any]] = {
    "lambda": {"filename": "lambda_function.py", "entrypoint": "lambda_function.lambda_handler"},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=50, help="new functions per variant")
    parser.add_argument(
        "--warm-requests", type=int, default=20, help="warm requests after each first request"
    )
    parser.add_argument(
        "--baseline-iterations", type=int, default=50, help="fresh `python -c` runs"
    )
    parser.add_argument(
        "--server-iterations",
        type=int,
        default=10,
        help="fresh uvicorn servers started for their first request (0: skip)",
    )
    parser.add_argument(
        "--cli-iterations",
        type=int,
        default=3,
        help="functions created with the `fissile fn create` CLI, for its latency (0: skip)",
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=0.05,
        help="seconds between iterations (the platform settles)",
    )
    parser.add_argument(
        "--keep-functions",
        action="store_true",
        help="keep every function (and its idle instance) instead of deleting it after use",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="first wait up to this many seconds for other processes to use < 10%% of the CPUs"
        " (0: don't wait; the CPU use of others is recorded anyway)",
    )
    parser.add_argument(
        "--sandbox",
        default="auto",
        help="fissile up --sandbox: auto (default: every layer this host allows), strict, off",
    )
    parser.add_argument("--output", default=None, help="default: benchmarks/results/coldstart.json")
    return parser.parse_args()


def first_request(port: int, path: str, expected: bytes, warm: int) -> tuple[float, list[float]]:
    """(ms of the first request incl. TCP connect, ms of each following warm request)."""
    raw = get_request(path)
    begin = time.perf_counter()
    client = RawHTTP.tcp(port)
    try:
        status, body = client.request(raw)
        cold = (time.perf_counter() - begin) * 1000
        if status != 200 or body != expected:
            raise RuntimeError(f"first request to {path}: HTTP {status} {body[:200]!r}")
        warm_ms = []
        for _ in range(warm):
            begin = time.perf_counter()
            status, body = client.request(raw)
            warm_ms.append((time.perf_counter() - begin) * 1000)
            if status != 200 or body != expected:
                raise RuntimeError(f"warm request to {path}: HTTP {status} {body[:200]!r}")
    finally:
        client.close()
    return cold, warm_ms


def bench_fissile(args: argparse.Namespace, workdir: Path, python_c: PythonC) -> dict[str, Any]:
    platform = Platform(workdir / "fissile", ("--sandbox", args.sandbox))
    platform.workdir.mkdir()
    platform.start()
    info = platform.client.info()
    sandbox_layers = {key: info.get(key) for key in ("sandbox_mode", "sandbox_active")}
    run_id = secrets.token_hex(3)
    cold: dict[str, list[float]] = {name: [] for name in VARIANTS}
    warm: dict[str, list[float]] = {name: [] for name in VARIANTS}
    create: dict[str, list[float]] = {}
    first_of_kind: dict[str, float] = {}
    cli: dict[str, Any] = {}
    try:
        # One throwaway function of each variant first, so the first measured iteration does
        # not also pay for the API's and the builder's own first-use costs, nor for the import
        # cache's package zygote of a library (fastapi's: it imports the library once). That
        # first cold start of its kind is reported on its own.
        for variant, (source, expected) in VARIANTS.items():
            name = f"warmup-{run_id}-{variant.replace('_', '-')}"
            platform.create_function(name, source, **CREATE.get(variant, {}))
            first_of_kind[variant] = round(
                first_request(platform.port, f"/function/{name}", expected, 1)[0], 3
            )
            platform.delete_function(name)
            time.sleep(args.pause)

        for i in range(args.iterations):
            for variant, (source, expected) in VARIANTS.items():
                name = f"cold-{run_id}-{variant.replace('_', '-')}-{i}"
                code = f"# fissile cold-start benchmark, function {name}\n{source}"
                timings = platform.create_function(name, code, **CREATE.get(variant, {}))
                for key, value in timings.items():
                    create.setdefault(key, []).append(value)
                cold_ms, warm_ms = first_request(
                    platform.port, f"/function/{name}", expected, args.warm_requests
                )
                cold[variant].append(cold_ms)
                warm[variant].extend(warm_ms)
                if not args.keep_functions:
                    platform.delete_function(name)
                time.sleep(args.pause)
            if i < args.baseline_iterations:
                # Interleaved, so both sides see the same background load.
                python_c.run()
                time.sleep(args.pause)
            if (i + 1) % 10 == 0 or i + 1 == args.iterations:
                done = [ms for samples in cold.values() for ms in samples]
                log(f"cold start {i + 1}/{args.iterations}: p50 {summarize(done)['p50']:.2f} ms")
        if args.cli_iterations:
            cli = bench_cli(platform, args.cli_iterations, workdir, run_id)
    finally:
        stop = platform.stop()
    everything = [ms for samples in cold.values() for ms in samples]
    return {
        "cold_start_ms": {
            "all": summarize(everything),
            **{variant: summarize(samples) for variant, samples in cold.items()},
        },
        "cold_start_samples_ms": {v: [round(ms, 3) for ms in s] for v, s in cold.items()},
        "first_function_of_its_kind_ms": first_of_kind,
        "warm_after_cold_ms": {
            "all": summarize([ms for samples in warm.values() for ms in samples]),
            **{variant: summarize(samples) for variant, samples in warm.items()},
        },
        "create_via_api_ms": {key: summarize(samples) for key, samples in create.items()},
        "create_via_cli": cli,
        "platform": {
            "sandbox": sandbox_layers,
            "startup_s": platform.startup_seconds,
            "router_port": platform.port,
            "stop": stop,
        },
    }


def bench_cli(platform: Platform, iterations: int, workdir: Path, run_id: str) -> dict[str, Any]:
    """`fissile fn create --code` as a user runs it (a new CLI process each time)."""
    fissile = Path(PYTHON).parent / "fissile"
    command = [str(fissile)] if fissile.exists() else [PYTHON, "-m", "fissile"]
    env = {**os.environ, "FISSILE_API": platform.api_url, "FISSILE_TOKEN": platform.token or ""}
    create_ms: list[float] = []
    cold_ms: list[float] = []
    source, expected = VARIANTS["fission_style"]
    for i in range(iterations):
        name = f"cli-{run_id}-{i}"
        path = workdir / "cli" / name / "hello.py"
        path.parent.mkdir(parents=True)
        path.write_text(f"# {name}\n{source}")
        begin = time.perf_counter()
        out = subprocess.run(
            [*command, "fn", "create", "--name", name, "--env", "python", "--code", str(path)],
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"fissile fn create failed ({out.returncode}): {out.stderr}")
        create_ms.append((time.perf_counter() - begin) * 1000)
        cold, _ = first_request(platform.port, f"/function/{name}", expected, 0)
        cold_ms.append(cold)
    return {
        "command": "fissile fn create --name N --env python --code hello.py",
        "create_ms": summarize(create_ms),
        "first_request_ms": summarize(cold_ms),
    }


class PythonC:
    """A fresh interpreter: spawn, import the hello module, call it, print, exit."""

    def __init__(self, workdir: Path, preload: str = "") -> None:
        code_dir = workdir / "python-c"
        code_dir.mkdir(exist_ok=True)
        (code_dir / "hello.py").write_text(VARIANTS["fission_style"][0])
        self.program = f"{preload}import hello; print(hello.main())"
        self.env = {**os.environ, "PYTHONPATH": str(code_dir)}
        self.samples: list[float] = []

    def run(self) -> None:
        begin = time.perf_counter()
        out = subprocess.run(
            [PYTHON, "-c", self.program], env=self.env, capture_output=True, check=True
        )
        self.samples.append((time.perf_counter() - begin) * 1000)
        if out.stdout.strip() != HELLO_BODY:
            raise RuntimeError(f"python -c printed {out.stdout!r}")

    def report(self) -> dict[str, Any]:
        return {
            "command": f"{PYTHON} -c {self.program!r}",
            "ms": summarize(self.samples),
            "samples_ms": [round(ms, 3) for ms in self.samples],
        }


def bench_uvicorn_start(iterations: int, workdir: Path) -> dict[str, Any]:
    """A fresh uvicorn server: from spawning it to the answer of its first request."""
    server_dir = workdir / "uvicorn"
    server_dir.mkdir(exist_ok=True)
    samples = []
    stops = []
    for _ in range(iterations):
        server = BareUvicorn(server_dir, free_port())
        begin = time.perf_counter()
        server.start()
        client = RawHTTP.tcp(server.port)
        try:
            status, body = client.request(get_request("/"))
        finally:
            client.close()
        samples.append((time.perf_counter() - begin) * 1000)
        stops.append(server.stop())
        if status != 200 or body != HELLO_BODY:
            raise RuntimeError(f"uvicorn answered HTTP {status} {body!r}")
    return {
        "command": " ".join(BareUvicorn(server_dir, 0).command()[:6]) + " ...",
        "ms": summarize(samples),
        "poll_interval_ms": 2,
        "all_stopped": all(not s["leftover_processes"] for s in stops),
    }


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    result: dict[str, Any] = {
        "benchmark": "coldstart",
        "machine": machine_info(),
        "parameters": {
            **vars(args),
            "variants": {name: source for name, (source, _) in VARIANTS.items()},
            "url": "http://127.0.0.1:<router>/function/<name> (direct URL, new TCP connection)",
        },
    }
    with Workdir("fissile-bench-cold-") as workdir:
        if args.quiet_wait > 0:
            result["quiet_wait"] = wait_until_quiet(args.quiet_wait)
        log(
            f"fissile: {args.iterations} new functions per variant,"
            f" interleaved with {min(args.iterations, args.baseline_iterations)} `python -c` runs"
        )
        python_c = PythonC(workdir)
        meter = CpuMeter().start()
        fissile = bench_fissile(args, workdir, python_c)
        fissile["cpu"] = meter.stop()
        log(f"baselines: {args.baseline_iterations} `python -c` runs in all")
        meter = CpuMeter().start()
        for _ in range(args.iterations, args.baseline_iterations):
            python_c.run()
        baselines: dict[str, Any] = {"python_c": python_c.report()}
        flask_runs = min(args.baseline_iterations, 20)
        if flask_runs:
            with_flask = PythonC(workdir, preload="import flask; ")
            for _ in range(flask_runs):
                with_flask.run()
            baselines["python_c_with_flask"] = with_flask.report()
        if args.server_iterations:
            log(f"baseline: {args.server_iterations} fresh uvicorn servers")
            baselines["uvicorn_start_and_first_request"] = bench_uvicorn_start(
                args.server_iterations, workdir
            )
        baselines["cpu"] = meter.stop()

    cold = fissile["cold_start_ms"]["all"]
    p50, p99 = cold.get("p50"), cold.get("p99")
    ratios: dict[str, Any] = {
        "python_c_p50_over_fissile_cold_p50": ratio(baselines["python_c"]["ms"]["p50"], p50),
        "fissile_cold_p50_over_python_c_p50": ratio(p50, baselines["python_c"]["ms"]["p50"]),
        "fissile_cold_p99_over_python_c_p99": ratio(p99, baselines["python_c"]["ms"]["p99"]),
    }
    if "python_c_with_flask" in baselines:
        ratios["python_c_with_flask_p50_over_fissile_cold_p50"] = ratio(
            baselines["python_c_with_flask"]["ms"]["p50"], p50
        )
    if "uvicorn_start_and_first_request" in baselines:
        ratios["uvicorn_start_p50_over_fissile_cold_p50"] = ratio(
            baselines["uvicorn_start_and_first_request"]["ms"]["p50"], p50
        )
    warm_p50 = fissile["warm_after_cold_ms"]["all"].get("p50")
    ratios["fissile_cold_p50_over_warm_p50"] = ratio(p50, warm_p50)
    result.update(
        fissile=fissile,
        baselines=baselines,
        ratios=ratios,
        target={
            "cold_start_p50_ms_at_most": TARGET_P50_MS,
            "cold_start_p99_ms_at_most": TARGET_P99_MS,
            "cold_start_p50_ms": p50,
            "cold_start_p99_ms": p99,
            "p50_met": p50 is not None and p50 <= TARGET_P50_MS,
            "p99_met": p99 is not None and p99 <= TARGET_P99_MS,
            "per_variant": {
                variant: {
                    "p50_ms": stats.get("p50"),
                    "p99_ms": stats.get("p99"),
                    "met": _met(stats),
                }
                for variant, stats in fissile["cold_start_ms"].items()
                if variant != "all"
            },
            "met": _met(cold)
            and all(_met(s) for v, s in fissile["cold_start_ms"].items() if v != "all"),
        },
        notes=[
            f"{os.cpu_count()} CPUs, nothing pinned: the client, the platform (router, control"
            " API and executor in one process), the zygote and the instances share them.",
            "Cold start = one new TCP connection + the first GET to /function/<name>, timed by"
            " the client once the create API calls have returned; the instance is taken from"
            " the environment's warm pool and specialized (imports the function's code).",
            "Each function has unique source, so each gets its own package and deploy dir.",
            "Functions are deleted after use unless --keep-functions; the pause between"
            " iterations lets the warm pool refill, as it would between real deploys.",
            "python_c is the cold start without a zygote: a new interpreter importing and"
            " calling the same hello (runs interleaved with the fissile iterations);"
            " python_c_with_flask adds the import Fission-style code"
            " needs (fissile's zygote preloads flask).",
            "uvicorn_start_and_first_request polls the port every 2 ms, so it may overstate"
            " by up to that much.",
            "cpu.other_processes_pct: CPU used meanwhile by processes this benchmark did not"
            " start (e.g. a test suite); anything well above 0 makes the figures pessimistic.",
        ],
        elapsed_s=round(time.monotonic() - started, 1),
    )
    write_results("coldstart", result, args.output)


def _met(stats: dict[str, Any]) -> bool:
    p50, p99 = stats.get("p50"), stats.get("p99")
    return p50 is not None and p50 <= TARGET_P50_MS and p99 is not None and p99 <= TARGET_P99_MS


if __name__ == "__main__":
    main()
