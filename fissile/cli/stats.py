"""``fissile top`` and ``fissile fn stats``: how busy, how fast, what failed, over a recent
window (``GET /v1/stats``, ``GET /v1/functions/{name}/stats``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import click

from fissile.cli._output import emit, output_option
from fissile.client import Client, ClientError
from fissile.ui.format import duration_ms

TOP_COLUMNS = (
    "FUNCTION",
    "REQ/S",
    "REQS",
    "ERR%",
    "P50",
    "P99",
    "WARM",
    "BUSY",
    "COLD",
    "QUEUE",
    "CRASHES",
)
# Right-aligned: the numbers.
_NUMERIC = frozenset(TOP_COLUMNS[1:])


def ms(value: float | None) -> str:
    return duration_ms(value, space="")


def per_second(value: float) -> str:
    return f"{value:.1f}" if value >= 10 or value == 0 else f"{value:.2f}"


def top_row(stats: dict[str, Any]) -> list[str]:
    instances = stats["instances"]
    return [
        stats["function"],
        per_second(stats["rate"]),
        str(stats["requests"]),
        f"{stats['error_rate'] * 100:.1f}",
        ms(stats["p50_ms"]),
        ms(stats["p99_ms"]),
        str(instances["ready"]),
        str(instances["busy"]),
        str(stats["cold_starts"]),
        str(stats["queued"]),
        str(stats["crashes"]),
    ]


def top_table(functions: Sequence[dict[str, Any]]) -> list[str]:
    """The table's lines: busiest first, then by name."""
    ordered = sorted(functions, key=lambda f: (-f["rate"], -f["requests"], f["function"]))
    cells = [list(TOP_COLUMNS), *(top_row(f) for f in ordered)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(TOP_COLUMNS))]
    lines = []
    for line in cells:
        parts = [
            cell.rjust(width) if header in _NUMERIC else cell.ljust(width)
            for cell, width, header in zip(line, widths, TOP_COLUMNS, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return lines


def _screen(client: Client, since: str, interval: float | None) -> list[str]:
    stats = client.stats(since)
    functions = stats["functions"]
    every = f", every {interval:g}s (Ctrl-C to quit)" if interval is not None else ""
    count = f"{len(functions)} function{'' if len(functions) == 1 else 's'}"
    header = f"fissile top  {time.strftime('%H:%M:%S')}  {count}, last {since}{every}"
    if not functions:
        return [header, "", "no functions"]
    return [header, "", *top_table(functions)]


@click.command()
@click.option("--since", default="1m", show_default=True, help="Window: 30s, 10m, 1h (at most 1h).")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option("--once", is_flag=True, help="Print the table once and exit.")
def top(since: str, interval: float, once: bool) -> None:
    """Every function's traffic, live: requests per second, error rate, p50/p99 latency,
    instances (warm, busy), cold starts, queue and crashes over the last --since."""
    with Client() as client:
        if once:
            click.echo("\n".join(_screen(client, since, None)))
            return
        live = sys.stdout.isatty()
        try:
            if live:
                click.echo("\x1b[?25l\x1b[2J", nl=False)  # hide the cursor, clear once
            while True:
                try:
                    lines = _screen(client, since, interval)
                except ClientError as exc:
                    if exc.status == 422:  # a wrong --since will not get better
                        raise
                    lines = [f"fissile top  {time.strftime('%H:%M:%S')}", "", str(exc)]
                if live:
                    # Redrawn in place: home, each line over the old one, the rest cleared.
                    click.echo("\x1b[H" + "".join(f"{line}\x1b[K\n" for line in lines), nl=False)
                    click.echo("\x1b[J", nl=False)
                else:
                    click.echo("\n".join(lines) + "\n")
                time.sleep(interval)
        except KeyboardInterrupt:
            pass
        finally:
            if live:
                click.echo("\x1b[?25h", nl=False)


def _stats_rows(stats: dict[str, Any], since: str) -> list[tuple[str, str]]:
    instances = stats["instances"]
    statuses = ", ".join(f"{code}={n}" for code, n in stats["statuses"].items()) or "-"
    processes = ", ".join(
        f"{p['id']} (pid {p['pid']}, {p['state']}, {p['inflight']} in flight)"
        for p in stats.get("processes", [])
    )
    return [
        ("Function", stats["function"]),
        ("Window", f"last {since} ({stats['window']:g}s of it seen)"),
        ("Requests", f"{stats['requests']} ({per_second(stats['rate'])}/s)"),
        ("Statuses", statuses),
        ("Errors", f"{stats['errors']} 5xx ({stats['error_rate'] * 100:.1f}%)"),
        ("Latency", f"p50 {ms(stats['p50_ms'])}, p99 {ms(stats['p99_ms'])}"),
        ("Cold starts", str(stats["cold_starts"])),
        ("Crashes", str(stats["crashes"])),
        (
            "Instances",
            f"{instances['ready']} ready ({instances['busy']} busy), {instances['starting']}"
            f" starting, {instances['desired']} desired",
        ),
        ("Processes", processes or "-"),
        ("Queue", f"{stats['queued']} queued, {stats['inflight']} in flight"),
        ("Restarts", str(stats.get("restarts", 0))),
        ("Last exit", stats.get("last_exit_reason") or "-"),
    ]


@click.command("stats")
@click.option("--name", required=True)
@click.option(
    "--since", default="10m", show_default=True, help="Window: 30s, 10m, 1h (at most 1h)."
)
@output_option
def fn_stats(name: str, since: str, output: str) -> None:
    """A function's requests, error rate, p50/p99 latency, cold starts and crashes over the
    last --since, with its instances now and its recent crashes."""
    with Client() as client:
        stats = client.function_stats(name, since)
    if output != "table":
        emit(stats, output, [])
        return
    for key, value in _stats_rows(stats, since):
        click.echo(f"{key + ':':<13}{value}")
    crashes = stats.get("recent_crashes") or []
    if crashes:
        click.echo("Recent crashes:")
        for crash in crashes:
            click.echo(f"  {crash['time']}  {crash.get('instance') or '-'}  {crash['reason']}")
