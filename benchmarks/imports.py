"""Cold start of a function importing numpy (the import cache), against a fresh
``python -c 'import numpy'`` process in the same run.

The platform runs with its default sandbox (every layer this host allows). numpy is installed
in the environment's Python (``make bench`` installs it), not in the function's package: the
import cache only imports what the environment provides (docs/architecture.md).

1. The first numpy function: its first request, which waits for the package zygote being made
   (importing numpy once), reported on its own.
2. N new functions (new source, so a new package and deploy dir each) ``import numpy`` and
   answer ``numpy.add(1, 2)``: the first request to each, on a new TCP connection, after the
   create API calls returned. Interleaved with N runs of the baseline.
3. For scale: the same numbers for a hello without numpy, interleaved too.

    .venv/bin/python benchmarks/imports.py [--iterations 40]

Prints JSON and writes it to benchmarks/results/imports.json.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    PYTHON,
    CpuMeter,
    Platform,
    RawHTTP,
    Workdir,
    get_request,
    log,
    machine_info,
    memory_of,
    ratio,
    summarize,
    wait_until_quiet,
    write_results,
)

TARGET_P50_MS = 10.0

NUMPY = "import numpy\n\ndef main():\n    return str(numpy.add(1, 2))\n"
HELLO = 'def main():\n    return "3"\n'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=40, help="new functions per series")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between iterations")
    parser.add_argument("--sandbox", default="auto", help="fissile up --sandbox (default auto)")
    parser.add_argument("--quiet-wait", type=float, default=0.0)
    parser.add_argument("--output", default=None, help="default: benchmarks/results/imports.json")
    return parser.parse_args()


def first_request(port: int, name: str) -> float:
    begin = time.perf_counter()
    client = RawHTTP.tcp(port)
    try:
        status, body = client.request(get_request(f"/function/{name}"))
    finally:
        client.close()
    elapsed = (time.perf_counter() - begin) * 1000
    if status != 200 or body != b"3":
        raise RuntimeError(f"first request to {name}: HTTP {status} {body[:300]!r}")
    return elapsed


def python_c_numpy() -> float:
    begin = time.perf_counter()
    subprocess.run([PYTHON, "-c", "import numpy"], check=True, capture_output=True)
    return (time.perf_counter() - begin) * 1000


def package_zygotes(platform: Platform) -> list[dict[str, Any]]:
    """The package zygotes (``fz-<env>-z<N>``) this platform runs, with their memory."""
    from _harness import descendants

    assert platform.proc is not None
    found = []
    for pid, _ in descendants(platform.proc.pid):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if re.fullmatch(r"fz-.+-z\d+", name):
            found.append({"pid": pid, "name": name, "memory": memory_of(pid)})
    return found


def main() -> None:
    args = parse_args()
    import numpy  # noqa: F401 - fail early, with a clear message, if it is missing

    started = time.monotonic()
    result: dict[str, Any] = {
        "benchmark": "imports",
        "machine": machine_info(),
        "parameters": {**vars(args), "numpy_source": NUMPY, "hello_source": HELLO},
    }
    samples: dict[str, list[float]] = {"numpy": [], "hello": [], "python_c_import_numpy": []}
    with Workdir("fissile-bench-imports-") as workdir:
        if args.quiet_wait > 0:
            result["quiet_wait"] = wait_until_quiet(args.quiet_wait)
        platform = Platform(workdir, ("--sandbox", args.sandbox))
        platform.start()
        run_id = secrets.token_hex(3)
        meter = CpuMeter().start()
        try:
            # Warm the API and builder, then the first numpy function: makes the zygote.
            platform.create_function(f"warmup-{run_id}", HELLO)
            first_request(platform.port, f"warmup-{run_id}")
            name = f"np-first-{run_id}"
            platform.create_function(name, f"# {name}\n{NUMPY}")
            first = first_request(platform.port, name)
            log(f"first numpy function (makes the package zygote): {first:.1f} ms")
            time.sleep(0.5)
            for i in range(args.iterations):
                for series, source in (("numpy", NUMPY), ("hello", HELLO)):
                    name = f"{series}-{run_id}-{i}"
                    platform.create_function(name, f"# {name}\n{source}")
                    samples[series].append(first_request(platform.port, name))
                    platform.delete_function(name)
                    time.sleep(args.pause)
                samples["python_c_import_numpy"].append(python_c_numpy())
                time.sleep(args.pause)
                if (i + 1) % 10 == 0:
                    log(
                        f"{i + 1}/{args.iterations}: p50 numpy"
                        f" {summarize(samples['numpy'])['p50']:.2f} ms, hello"
                        f" {summarize(samples['hello'])['p50']:.2f} ms, python -c"
                        f" {summarize(samples['python_c_import_numpy'])['p50']:.1f} ms"
                    )
            zygotes = package_zygotes(platform)
        finally:
            cpu = meter.stop()
            stop = platform.stop()
    stats = {key: summarize(values) for key, values in samples.items()}
    p50, p99 = stats["numpy"].get("p50"), stats["numpy"].get("p99")
    result.update(
        fissile={
            "first_numpy_function_ms": round(first, 3),
            "cold_start_ms": {"numpy": stats["numpy"], "hello": stats["hello"]},
            "package_zygotes": zygotes,
            "cpu": cpu,
            "platform": {"startup_s": platform.startup_seconds, "stop": stop},
        },
        baselines={"python_c_import_numpy": stats["python_c_import_numpy"]},
        samples_ms={key: [round(v, 3) for v in values] for key, values in samples.items()},
        ratios={
            "python_c_import_numpy_p50_over_fissile_numpy_p50": ratio(
                stats["python_c_import_numpy"]["p50"], p50
            ),
            "fissile_numpy_p50_over_hello_p50": ratio(p50, stats["hello"]["p50"]),
        },
        target={
            "numpy_cold_start_p50_ms_at_most": TARGET_P50_MS,
            "numpy_cold_start_p50_ms": p50,
            "numpy_cold_start_p99_ms": p99,
            "met": p50 is not None and p50 <= TARGET_P50_MS,
        },
        notes=[
            f"{os.cpu_count()} CPUs shared by the client, the platform and its processes.",
            "Cold start = a new TCP connection + the first GET /function/<name> of a function"
            " created just before (new source each time: new package, new deploy dir).",
            "numpy functions fork from the package zygote that imported numpy (one for all"
            " of them: the same dependencies), the hello ones from the environment's zygote;"
            " both from a warm pool when it has an instance.",
            "first_numpy_function_ms includes making that zygote (importing numpy once).",
            "python_c_import_numpy: a new interpreter that imports numpy and exits.",
        ],
        elapsed_s=round(time.monotonic() - started, 1),
    )
    write_results("imports", result, args.output)


if __name__ == "__main__":
    main()
