"""Cold start of functions that are programs: a Node server under image ``command`` and a shell
script under image ``binary``, against starting the same Node server bare (no platform, no
sandbox). These instances exec a new runtime per function (Node) or a process per request
(binary), so the 5 ms target of Python functions (``coldstart.py``) does not apply: the
figures are reported apart.

Each iteration creates a new function (new source: new package and deploy dir) through the
control API, then times, from the client, the first request through the router on a new TCP
connection, then a few warm requests on it.

    .venv/bin/python benchmarks/coldstart_languages.py [--iterations 20]

Prints JSON and writes it to benchmarks/results/coldstart_languages.json.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    CpuMeter,
    Platform,
    RawHTTP,
    Workdir,
    get_request,
    log,
    machine_info,
    summarize,
    wait_until_quiet,
    write_results,
    zip_source,
)

NODE_SERVER = """\
// fissile cold-start benchmark, function {name}
const http = require("http");
const server = http.createServer((req, res) => {{
  res.writeHead(200, {{"content-type": "text/plain", "content-length": "5"}});
  res.end("hello");
}});
server.keepAliveTimeout = 0;
server.listen({{fd: Number(process.env.FISSILE_SOCKET_FD)}});
"""
SHELL_SCRIPT = "# fissile cold-start benchmark, function {name}\necho -n hello\n"

# name -> (environment spec, file name, source template)
VARIANTS: dict[str, tuple[dict[str, Any], str, str]] = {
    "node_command": (
        {"name": "bench-node", "image": "command", "command": "node server.js", "poolsize": 3},
        "server.js",
        NODE_SERVER,
    ),
    "shell_binary": (
        {"name": "bench-sh", "image": "binary", "poolsize": 3},
        "hello.sh",
        SHELL_SCRIPT,
    ),
}
EXPECTED = b"hello"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20, help="new functions per variant")
    parser.add_argument("--warm-requests", type=int, default=20)
    parser.add_argument("--baseline-iterations", type=int, default=20, help="bare node starts")
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between iterations")
    parser.add_argument("--sandbox", default="auto", help="fissile up --sandbox")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="first wait up to this many seconds for other processes to use < 10%% of the CPUs",
    )
    parser.add_argument("--output", default=None)
    return parser.parse_args()


def first_request(port: int, path: str, warm: int) -> tuple[float, list[float]]:
    raw = get_request(path)
    begin = time.perf_counter()
    client = RawHTTP.tcp(port)
    try:
        status, body = client.request(raw)
        cold = (time.perf_counter() - begin) * 1000
        if status != 200 or body != EXPECTED:
            raise RuntimeError(f"first request to {path}: HTTP {status} {body[:300]!r}")
        warm_ms = []
        for _ in range(warm):
            begin = time.perf_counter()
            status, body = client.request(raw)
            warm_ms.append((time.perf_counter() - begin) * 1000)
            if status != 200 or body != EXPECTED:
                raise RuntimeError(f"warm request to {path}: HTTP {status} {body[:300]!r}")
    finally:
        client.close()
    return cold, warm_ms


def create(platform: Platform, env: str, name: str, filename: str, source: str) -> None:
    client = platform.client
    sha = client.upload_archive(zip_source(filename, source))["sha256"]
    client.create("packages", {"name": f"{name}-pkg", "env": env, "source": sha})
    built = platform.wait_for_build(f"{name}-pkg")
    if built["status"]["state"] != "succeeded":
        raise RuntimeError(f"{name}: build failed: {built['status']['log']}")
    client.create("functions", {"name": name, "env": env, "package": f"{name}-pkg"})


def bench_fissile(args: argparse.Namespace, workdir: Path, node: str | None) -> dict[str, Any]:
    platform = Platform(workdir / "fissile", ("--sandbox", args.sandbox))
    platform.workdir.mkdir()
    platform.start()
    info = platform.client.info()
    run_id = secrets.token_hex(3)
    variants = {k: v for k, v in VARIANTS.items() if node is not None or k != "node_command"}
    cold: dict[str, list[float]] = {name: [] for name in variants}
    warm: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for env, _, _ in variants.values():
            platform.client.create("environments", env)
        time.sleep(1.0)  # the environments' zygotes start and fill their warm pools
        for i in range(-1, args.iterations):  # -1: a throwaway first round
            for variant, (env, filename, template) in variants.items():
                name = f"cold-{run_id}-{variant.replace('_', '-')}-{i + 1}"
                create(platform, env["name"], name, filename, template.format(name=name))
                cold_ms, warm_ms = first_request(
                    platform.port, f"/function/{name}", args.warm_requests
                )
                if i >= 0:
                    cold[variant].append(cold_ms)
                    warm[variant].extend(warm_ms)
                platform.delete_function(name)
                time.sleep(args.pause)
            if i >= 0 and ((i + 1) % 5 == 0 or i + 1 == args.iterations):
                log(
                    f"{i + 1}/{args.iterations}: "
                    + ", ".join(f"{v} p50 {summarize(s)['p50']:.1f} ms" for v, s in cold.items())
                )
    finally:
        stop = platform.stop()
    return {
        "cold_start_ms": {variant: summarize(samples) for variant, samples in cold.items()},
        "cold_start_samples_ms": {v: [round(ms, 2) for ms in s] for v, s in cold.items()},
        "warm_after_cold_ms": {variant: summarize(samples) for variant, samples in warm.items()},
        "platform": {
            "sandbox": {k: info.get(k) for k in ("sandbox_mode", "sandbox_active")},
            "stop": stop,
        },
    }


def bench_bare_node(node: str, iterations: int, workdir: Path) -> dict[str, Any]:
    """``node server.js`` started by hand on a unix socket handed to it as fd 3, timed from
    the spawn to its first answer (no platform, no sandbox): what the command image adds to."""
    script = workdir / "bare.js"
    script.write_text(NODE_SERVER.format(name="bare"))
    samples = []
    for i in range(iterations):
        path = os.path.join(tempfile.gettempdir(), f"fissile-bench-node-{os.getpid()}-{i}.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(16)
        begin = time.perf_counter()
        process = subprocess.Popen(
            [node, str(script)],
            pass_fds=[listener.fileno()],
            env={"PATH": os.environ.get("PATH", ""), "FISSILE_SOCKET_FD": str(listener.fileno())},
            stdin=subprocess.DEVNULL,
        )
        try:
            client = RawHTTP.unix(path)
            status, body = client.request(get_request("/"))
            samples.append((time.perf_counter() - begin) * 1000)
            client.close()
            if status != 200 or body != EXPECTED:
                raise RuntimeError(f"bare node: HTTP {status} {body[:300]!r}")
        finally:
            process.kill()
            process.wait()
            listener.close()
            os.unlink(path)
    return {"ms": summarize(samples), "samples_ms": [round(ms, 2) for ms in samples]}


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    node = shutil.which("node")
    if node is None:
        log("node is not installed: only the binary image is measured")
    result: dict[str, Any] = {
        "benchmark": "coldstart_languages",
        "machine": machine_info(),
        "parameters": {
            **vars(args),
            "node_version": subprocess.run(
                [node, "--version"], capture_output=True, text=True, check=False
            ).stdout.strip()
            if node
            else None,
            "sources": {name: template for name, (_, _, template) in VARIANTS.items()},
        },
    }
    with Workdir("fissile-bench-cold-lang-") as workdir:
        if args.quiet_wait > 0:
            result["quiet_wait"] = wait_until_quiet(args.quiet_wait)
        meter = CpuMeter().start()
        fissile = bench_fissile(args, workdir, node)
        fissile["cpu"] = meter.stop()
        baselines: dict[str, Any] = {}
        if node is not None and args.baseline_iterations:
            log(f"baseline: {args.baseline_iterations} bare node starts")
            baselines["bare_node_start_and_first_request"] = bench_bare_node(
                node, args.baseline_iterations, workdir
            )
    result.update(
        fissile=fissile,
        baselines=baselines,
        notes=[
            f"{os.cpu_count()} CPUs, nothing pinned: client, platform, zygotes and instances"
            " share them.",
            "Cold start = a new TCP connection + the first GET to /function/<name>, after the"
            " create API calls returned. node_command: a warm (forked, sandboxed) instance is"
            " specialized, execs `node server.js` in the function's package, and is ready once"
            " Node answers a probe on the inherited socket. shell_binary: a warm instance is"
            " specialized (no import) and runs `sh hello.sh` for the request.",
            "bare_node_start_and_first_request: node spawned outside the platform on a unix"
            " socket (fd 3), timed to its first answer: Node's own start-up.",
            "The 5 ms / 20 ms cold-start target is for Python functions (coldstart.py); a"
            " program started per function, or per request, cannot share a zygote's heap.",
        ],
        elapsed_s=round(time.monotonic() - started, 1),
    )
    write_results("coldstart_languages", result, args.output)


if __name__ == "__main__":
    main()
