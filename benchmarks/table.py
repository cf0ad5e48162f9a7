"""The latest figures against the issue's targets, as a Markdown table, read from
benchmarks/results/*.json. With ``--write``, it replaces the table in docs/performance.md (between
its ``<!-- table -->`` markers), with the machine and date of the results.

    .venv/bin/python benchmarks/table.py [--write]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DOC = RESULTS.parents[1] / "docs" / "performance.md"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def c_native(cold: dict[str, Any]) -> float:
    return float(cold["fissile"]["cold_start_ms"]["native"]["p50"])


def verdict(met: bool | None) -> str:
    return "—" if met is None else ("met" if met else "**missed**")


def others(cpu: dict[str, Any] | None) -> str:
    """CPU that processes the benchmark did not start used meanwhile (of the whole machine)."""
    if not cpu:
        return "?"
    return f"{cpu.get('other_processes_pct', '?')}%"


def table() -> str:
    rows: list[tuple[str, ...]] = []
    cold = load("coldstart")
    if cold is not None:
        c = cold["fissile"]["cold_start_ms"]["all"]
        base = cold["baselines"]["python_c"]["ms"]["p50"]
        t = cold["target"]
        rows.append(
            (
                "Cold start, hello, sandboxed (first request to a new function; four contracts)",
                f"p50 {c['p50']:.2f} ms, p99 {c['p99']:.2f} ms",
                "p50 ≤ 5 ms, p99 ≤ 20 ms",
                f"new `python -c` hello: p50 {base:.1f} ms ({base / c['p50']:.1f}x slower)",
                f"p50 {verdict(t['p50_met'])}, p99 {verdict(t['p99_met'])}",
                others(cold["fissile"].get("cpu")),
                "coldstart.json",
            )
        )
        for variant, label in (("lambda", "AWS Lambda"), ("fission_fastapi", "Fission FastAPI")):
            v = t.get("per_variant", {}).get(variant)
            if v is None:
                continue
            first = cold["fissile"].get("first_function_of_its_kind_ms", {}).get(variant)
            rows.append(
                (
                    f"Cold start, {label} hello (contract detected by auto)",
                    f"p50 {v['p50_ms']:.2f} ms, p99 {v['p99_ms']:.2f} ms"
                    + (f" (the first one of its kind: {first:.0f} ms)" if first else ""),
                    "p50 ≤ 5 ms, p99 ≤ 20 ms",
                    f"native hello, same run: p50 {c_native(cold):.2f} ms",
                    verdict(v["met"]),
                    others(cold["fissile"].get("cpu")),
                    "coldstart.json",
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
                verdict(imports["target"]["met"]),
                others(imports["fissile"].get("cpu")),
                "imports.json",
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
                verdict(t["rps_ratio_over_bare_met"]),
                others(warm["fissile"]["runs"][t["run"]]["load"].get("cpu")),
                "warm.json",
            )
        )
        if t.get("rps_ratio_over_ff") is not None:
            rows.append(
                (
                    "Warm throughput vs functions-framework",
                    f"{head['fissile_rps']:.0f} req/s",
                    "≥ 1.5x functions-framework",
                    f"functions-framework {head['ff_rps']:.0f} req/s: {t['rps_ratio_over_ff']}x",
                    verdict(t["rps_ratio_over_ff_met"]),
                    others((warm.get("functions_framework") or {}).get("cpu")),
                    "warm.json",
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
                "—",
                others(warm["fissile"]["runs"][t["run"]]["load"].get("cpu")),
                "warm.json",
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
                    verdict(t["router_overhead_met"]),
                    "?",
                    "warm.json",
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
                verdict(burst["target"]["met"]),
                others(f.get("cpu")),
                "burst.json",
            )
        )
    memory = load("memory")
    if memory is not None:
        t = memory["target"]
        fresh = memory["baselines"]["fresh_interpreter_same_imports"]["private_mib"]
        pool = memory["instances"]["warm_instance_mib"]["private_mib"].get("median")
        rows.append(
            (
                "Private memory per idle instance: specialized (served its function, idle)",
                f"{t['instance_private_mib_median']:.2f} MiB",
                "≤ 5 MiB",
                f"a new interpreter with the same imports: {fresh:.1f} MiB",
                verdict(t["instance_met"]),
                "n/a",
                "memory.json",
            )
        )
        if pool is not None:
            rows.append(
                (
                    "Private memory per idle instance: warm pool (forked, not specialized)",
                    f"{pool:.2f} MiB",
                    "≤ 5 MiB",
                    f"a new interpreter with the same imports: {fresh:.1f} MiB",
                    verdict(pool <= 5.0),
                    "n/a",
                    "memory.json",
                )
            )
        many = memory["many"]
        routing = many["routing_latency_ms"]
        more = many["functions"] - 1
        rows.append(
            (
                f"Control-plane RSS with {more:,} more idle functions (scaled to zero)",
                f"+{many['rss_increase_mb']:.1f} MB ({many['rss_per_function_kb']:.0f} kB each)",
                "≤ +50 MB",
                f"supervisor RSS with one function: {many['supervisor_rss_mb']['one_function']} MB",
                verdict(t["many_met"]),
                "n/a",
                "memory.json",
            )
        )
        slower = many["routing_p50_ratio_after_over_before"]
        lookup = memory["route_lookup"]
        rows.append(
            (
                f"Routing with {more:,} more functions and routes",
                f"p50 {routing['one_function']['p50']:.3f} → {routing['after']['p50']:.3f} ms"
                f" ({slower}x); route lookup alone {lookup['ratio']}x"
                f" ({lookup['routes_1_us_per_match']} → "
                f"{lookup[f'routes_{more}_us_per_match']} µs)",
                "not slower",
                "the same route with one function deployed",
                verdict(slower is not None and slower <= 1.2),
                "?",
                "memory.json",
            )
        )
    lines = [
        "| figure | fissile | target | baseline (same run) | verdict | others' CPU | file |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    machine = (cold or warm or {}).get("machine", {})
    runs = ", ".join(
        f"{name} {result['machine'].get('date', '?')} (git {result['machine'].get('git_commit')})"
        for name, result in (
            ("coldstart", cold),
            ("imports", imports),
            ("warm", warm),
            ("burst", burst),
            ("memory", memory),
        )
        if result is not None
    )
    lines += [
        "",
        f"{machine.get('cpu_count', '?')} CPUs ({machine.get('cpu_model', '?')}), Python"
        f" {machine.get('python', '?')}. Runs: {runs}. *Others' CPU*: the share of the whole"
        " machine used during the measurement by processes the benchmark did not start.",
    ]
    return "\n".join(lines)


def main() -> None:
    text = table()
    if "--write" not in sys.argv[1:]:
        print(text)
        return
    doc = DOC.read_text()
    pattern = re.compile(r"(<!-- table -->\n).*?(<!-- /table -->)", re.S)
    if not pattern.search(doc):
        raise SystemExit(f"no <!-- table --> markers in {DOC}")
    DOC.write_text(pattern.sub(lambda m: m.group(1) + text + "\n" + m.group(2), doc))
    print(f"updated {DOC.name}", file=sys.stderr)


if __name__ == "__main__":
    main()
