"""How the dashboard writes numbers, and its sparklines (inline SVG paths); ``static/ui.js``
writes them the same way when it refreshes a page."""

from __future__ import annotations

from collections.abc import Sequence

SPARK_WIDTH = 120
SPARK_HEIGHT = 24


def duration_ms(value: float | None, space: str = " ") -> str:
    """Milliseconds as a person reads them (``fissile top`` drops the space: ``space=""``)."""
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f}{space}s"
    if value >= 10:
        return f"{value:.0f}{space}ms"
    return f"{value:.2f}{space}ms"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 or value == 0 else f"{value:.2f}"


def clock(iso: str | None) -> str:
    """An ISO timestamp (the platform's are UTC) to the second: ``2026-01-02 03:04:05``."""
    return "-" if not iso else iso.replace("T", " ")[:19]


def sparkline_path(
    values: Sequence[float | None], width: int = SPARK_WIDTH, height: int = SPARK_HEIGHT
) -> str:
    """An SVG path through ``values`` scaled to the box (0 at the bottom, the largest at the
    top), broken where a value is None (no requests: no latency). A point alone between two
    breaks is a zero-length segment, drawn as a dot by the stroke's round caps."""
    top = max((v for v in values if v is not None), default=0.0) or 1.0
    step = width / max(len(values) - 1, 1)
    commands: list[str] = []
    run = 0  # points in the current unbroken run
    for index, value in enumerate([*values, None]):
        if value is None:
            if run == 1:
                commands.append("h0")
            run = 0
            continue
        x = index * step
        y = height - 1 - value / top * (height - 2)
        commands.append(f"{'L' if run else 'M'}{x:.1f},{y:.1f}")
        run += 1
    return " ".join(commands)
