"""Plot the latest results: cold-start and warm-latency distributions of fissile against its
baselines, from benchmarks/results/*.json, into benchmarks/results/latency.png.

    .venv/bin/python benchmarks/plot.py

Needs matplotlib (``make bench`` installs the ``bench`` extra). A panel whose results file is
missing is left out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def cdf(axis: Any, samples: list[float], label: str, **style: Any) -> None:
    if not samples:
        return
    ordered = sorted(samples)
    n = len(ordered)
    axis.plot(ordered, [(i + 1) / n for i in range(n)], label=f"{label} (n={n})", **style)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    def plain(axis: Any, which: str) -> None:
        target = axis.xaxis if which == "x" else axis.yaxis
        target.set_major_formatter(FormatStrFormatter("%g"))
        target.set_minor_formatter(NullFormatter())

    cold, imports, warm = load("coldstart"), load("imports"), load("warm")
    burst = load("burst")
    figure, axes = plt.subplots(1, 3, figsize=(18, 5.5))

    axis = axes[0]
    if cold is not None:
        for variant, samples in cold["fissile"]["cold_start_samples_ms"].items():
            cdf(axis, samples, f"fissile hello ({variant})", linewidth=2)
        python_c = cold["baselines"]["python_c"].get("samples_ms", [])
        cdf(axis, python_c, "python -c hello (new interpreter)", linestyle="--")
    if imports is not None:
        cdf(axis, imports["samples_ms"]["numpy"], "fissile numpy function", linewidth=2)
        cdf(
            axis,
            imports["samples_ms"]["python_c_import_numpy"],
            "python -c 'import numpy'",
            linestyle="--",
        )
    axis.set_xscale("log")
    plain(axis, "x")
    axis.set_xlabel("first request to a new function (ms, log)")
    axis.set_ylabel("fraction of cold starts")
    axis.set_title("Cold start (sandboxed) vs a new interpreter")
    axis.axvline(5, color="grey", linewidth=0.8, linestyle=":")
    axis.axvline(10, color="grey", linewidth=0.8, linestyle=":")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")

    axis = axes[1]
    if warm is not None and "sequential_samples_ms" in warm["fissile"]:
        names = {
            "bare": "bare uvicorn (TCP)",
            "fission_style_router": "fissile router (TCP) -> instance",
            "fission_style_direct": "instance direct (unix socket)",
            "native_router": "fissile router, native hello",
        }
        for key, samples in warm["fissile"]["sequential_samples_ms"].items():
            if key in names:
                cdf(axis, samples, names[key], linewidth=2 if "router" in key else 1.2)
    axis.set_xscale("log")
    plain(axis, "x")
    axis.set_xlabel("request latency, one client, keep-alive (ms, log)")
    axis.set_title("Warm latency without load")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")

    axis = axes[2]
    percentiles = ["p50", "p75", "p90", "p99", "p99_9"]
    xs = list(range(len(percentiles)))  # evenly spaced: the tail gets as much room as p50
    if warm is not None:
        series: list[tuple[str, dict[str, Any]]] = [
            (f"bare uvicorn ({run['requests_per_s']:.0f} req/s)", run)
            for run in warm["bare"]["runs"][:1]
        ]
        ff = warm.get("functions_framework")
        if ff:
            series.append((f"functions-framework ({ff['requests_per_s']:.0f} req/s)", ff))
        for key, run in warm["fissile"]["runs"].items():
            load_run = run["load"]
            series.append((f"fissile {key} ({load_run['requests_per_s']:.0f} req/s)", load_run))
        for label, run in series:
            latency = run["latency_ms"]
            if all(p in latency for p in percentiles):
                axis.plot(xs, [latency[p] for p in percentiles], marker="o", label=label)
    if burst is not None:
        samples = sorted(burst["fissile"].get("samples_ms", []))
        if samples:
            fractions = [0.5, 0.75, 0.9, 0.99, 0.999]
            points = [samples[min(len(samples) - 1, int(len(samples) * f))] for f in fractions]
            axis.plot(xs, points, marker="s", linestyle="--", label="fissile burst 0->50 (cold)")
    axis.set_yscale("log")
    plain(axis, "y")
    axis.set_xticks(xs)
    axis.set_xticklabels(["p50", "p75", "p90", "p99", "p99.9"])
    axis.set_ylabel("latency (ms, log)")
    axis.set_title("Under load (wrk 2 threads x 32 connections)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")

    figure.tight_layout()
    output = RESULTS / "latency.png"
    figure.savefig(output, dpi=110)
    print(f"wrote {output.relative_to(RESULTS.parent.parent)}", file=sys.stderr)


if __name__ == "__main__":
    main()
