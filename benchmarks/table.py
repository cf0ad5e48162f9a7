"""The latest figures against the issue's targets, as a Markdown table (for docs/performance.md),
read from benchmarks/results/*.json.

    .venv/bin/python benchmarks/table.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def verdict(met: bool | None) -> str:
    return "—" if met is None else ("met" if met else "**missed**")


def main() -> None:
    rows: list[tuple[str, str, str, str, str]] = []
    cold = load("coldstart")
    if cold is not None:
        c = cold["fissile"]["cold_start_ms"]["all"]
        base = cold["baselines"]["python_c"]["ms"]["p50"]
        t = cold["target"]
        rows.append(
            (
                "Cold start, hello, sandboxed (first request to a new function)",
                f"p50 {c['p50']:.2f} ms, p99 {c['p99']:.2f} ms",
                "p50 ≤ 5 ms, p99 ≤ 20 ms",
                f"new `python -c` hello: p50 {base:.1f} ms ({base / c['p50']:.1f}x slower)",
                f"p50 {verdict(t['p50_met'])}, p99 {verdict(t['p99_met'])} (coldstart.json)",
            )
        )
    imports = load("imports")
    if imports is not None:
        n = imports["fissile"]["cold_start_ms"]["numpy"]
        base = imports["baselines"]["python_c_import_numpy"]["p50"]
        rows.append(
            (
                "Cold start, function importing numpy",
                f"p50 {n['p50']:.2f} ms, p99 {n['p99']:.2f} ms (the first one, making the"
                f" zygote: {imports['fissile']['first_numpy_function_ms']:.0f} ms)",
                "p50 ≤ 10 ms",
                f"new `python -c 'import numpy'`: p50 {base:.1f} ms ({base / n['p50']:.1f}x)",
                f"{verdict(imports['target']['met'])} (imports.json)",
            )
        )
    warm = load("warm")
    if warm is not None:
        t = warm["target"]
        head = warm["comparison"][t["run"]]
        rows.append(
            (
                "Warm throughput of hello through the router (wrk 2x32)",
                f"{head['fissile_rps']:.0f} req/s",
                "≥ 0.5x bare uvicorn",
                f"bare uvicorn {head['bare_rps']:.0f} req/s: {t['rps_ratio_over_bare']}x",
                f"{verdict(t['rps_ratio_over_bare_met'])} (warm.json)",
            )
        )
        if t.get("rps_ratio_over_ff") is not None:
            rows.append(
                (
                    "Warm throughput vs functions-framework",
                    f"{head['fissile_rps']:.0f} req/s",
                    "≥ 1.5x functions-framework",
                    f"functions-framework {head['ff_rps']:.0f} req/s: {t['rps_ratio_over_ff']}x",
                    f"{verdict(t['rps_ratio_over_ff_met'])} (warm.json)",
                )
            )
        lat = warm["fissile"]["runs"][t["run"]]["load"]["latency_ms"]
        bare = warm["bare"]["average"]["latency_ms"]
        rows.append(
            (
                "Warm latency under that load",
                f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms",
                "(reported)",
                f"bare uvicorn p50 {bare['p50']:.2f} ms, p99 {bare['p99']:.2f} ms",
                "— (warm.json)",
            )
        )
        overhead = t.get("router_overhead_p50_ms")
        if overhead is not None:
            rows.append(
                (
                    "Router overhead (router p50 - instance direct p50, no load)",
                    f"{overhead * 1000:.0f} µs",
                    "≤ 150 µs",
                    "same instance on its unix socket",
                    f"{verdict(t['router_overhead_met'])} (warm.json)",
                )
            )
    burst = load("burst")
    if burst is not None:
        f = burst["fissile"]
        b = burst["baselines"]["bare_uvicorn"]["latency_ms"]
        rows.append(
            (
                "Burst 0 → 50 clients, cold function, max-scale 8",
                f"{f['served_200']}/{f['sent']} served, {f['errors']} errors;"
                f" p50 {f['latency_ms']['p50']:.1f} ms, p99 {f['latency_ms']['p99']:.1f} ms;"
                f" {f['max_instances_seen']} instances",
                "zero errors, all served; p99 reported",
                f"bare uvicorn (warm, no work): p99 {b['p99']:.1f} ms",
                f"{verdict(burst['target']['met'])} (burst.json)",
            )
        )
    memory = load("memory")
    if memory is not None:
        t = memory["target"]
        fresh = memory["baselines"]["fresh_interpreter_same_imports"]["private_mib"]
        rows.append(
            (
                "Private memory per idle warm (specialized) instance",
                f"{t['instance_private_mib_median']:.2f} MiB",
                "≤ 5 MiB",
                f"a new interpreter with the same imports: {fresh:.1f} MiB",
                f"{verdict(t['instance_met'])} (memory.json)",
            )
        )
        many = memory["many"]
        routing = many["routing_latency_ms"]
        rows.append(
            (
                f"Control-plane RSS with {many['functions'] - 1:,} more idle functions",
                f"+{many['rss_increase_mb']:.1f} MB ({many['rss_per_function_kb']:.0f} kB each);"
                f" routing p50 {routing['one_function']['p50']:.3f} → "
                f"{routing['after']['p50']:.3f} ms",
                "≤ +50 MB; routing not slower",
                f"route lookup {memory['route_lookup']['ratio']}x with"
                f" {many['functions'] - 1:,} routes vs 1",
                f"{verdict(t['many_met'])} (memory.json)",
            )
        )
    print("| figure | fissile | target | baseline (same run) | verdict |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
