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


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _warnings(stats: dict[str, Any]) -> list[str]:
    """A cluster's nodes that did not answer (``warnings``), one line each."""
    return [f"warning: {w['warning']}" for w in stats.get("warnings", [])]


def _screen(client: Client, since: str, interval: float | None, node: str | None) -> list[str]:
    stats = client.stats(since, node)
    functions = stats["functions"]
    every = f", every {interval:g}s (Ctrl-C to quit)" if interval is not None else ""
    count = _plural(len(functions), "function")
    if "nodes" in stats:  # a cluster: whose numbers these are
        count += f" on {f'node {node}' if node else _plural(len(stats['nodes']), 'node')}"
    header = f"fissile top  {time.strftime('%H:%M:%S')}  {count}, last {since}{every}"
    if not functions:
        return [header, *_warnings(stats), "", "no functions"]
    return [header, *_warnings(stats), "", *top_table(functions)]


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
@click.option("--node", default=None, help="In a cluster: this node's numbers alone.")
def top(since: str, interval: float, once: bool, node: str | None) -> None:
    """Every function's traffic, live: requests per second, error rate, p50/p99 latency,
    instances (warm, busy), cold starts, queue and crashes over the last --since. In a
    cluster, every node's numbers together (--node: one node's)."""
    with Client() as client:
        if once:
            click.echo("\n".join(_screen(client, since, None, node)))
            return
        live = sys.stdout.isatty()
        try:
            if live:
                click.echo("\x1b[?25l\x1b[2J", nl=False)  # hide the cursor, clear once
            while True:
                try:
                    lines = _screen(client, since, interval, node)
                except ClientError as exc:
                    if exc.status in (404, 422):  # a wrong --since or --node will not get better
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
        f"{p['node'] + '/' if 'node' in p else ''}{p['id']} (pid {p['pid']}, {p['state']},"
        f" {p['inflight']} in flight)"
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


NODE_COLUMNS = ("NODE", "REQ/S", "REQS", "ERRORS", "P50", "P99", "READY", "BUSY", "QUEUE")


def node_table(nodes: Sequence[dict[str, Any]]) -> list[str]:
    """A cluster's share of a function per node (``nodes``), one line each."""
    cells = [list(NODE_COLUMNS)]
    for n in nodes:
        instances = n["instances"]
        cells.append(
            [
                n["node"],
                per_second(n["rate"]),
                str(n["requests"]),
                str(n["errors"]),
                ms(n["p50_ms"]),
                ms(n["p99_ms"]),
                str(instances["ready"]),
                str(instances["busy"]),
                str(n["queued"]),
            ]
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(NODE_COLUMNS))]
    return [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in cells
    ]


@click.command("stats")
@click.option("--name", required=True)
@click.option(
    "--since", default="10m", show_default=True, help="Window: 30s, 10m, 1h (at most 1h)."
)
@click.option("--node", default=None, help="In a cluster: this node's numbers alone.")
@output_option
def fn_stats(name: str, since: str, node: str | None, output: str) -> None:
    """A function's requests, error rate, p50/p99 latency, cold starts and crashes over the
    last --since, with its instances now and its recent crashes. In a cluster, every node's
    numbers together, then each node's share (--node: one node's)."""
    with Client() as client:
        stats = client.function_stats(name, since, node)
    if output != "table":
        emit(stats, output, [])
        return
    for line in _warnings(stats):
        click.echo(line, err=True)
    for key, value in _stats_rows(stats, since):
        click.echo(f"{key + ':':<13}{value}")
    crashes = stats.get("recent_crashes") or []
    if crashes:
        click.echo("Recent crashes:")
        for crash in crashes:
            where = f"{crash['node']}/" if "node" in crash else ""
            instance = f"{where}{crash.get('instance') or '-'}"
            click.echo(f"  {crash['time']}  {instance}  {crash['reason']}")
    if "nodes" in stats:
        click.echo("Nodes:")
        for line in node_table(stats["nodes"]):
            click.echo(f"  {line}")
