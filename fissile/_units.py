"""Parsing and formatting of the human units used by flags and specs (``60s``, ``256Mi``)."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T|k|B)?\s*$")
_MEMORY_FACTORS = {
    None: 1,
    "B": 1,
    "K": 1000,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def parse_duration(value: object) -> float:
    """Seconds from ``90``, ``"90"``, ``"1.5s"``, ``"500ms"``, ``"2m"``, ``"1h"``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("a duration must be a number of seconds or a string like '30s'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"invalid duration {value!r}: use a number with ms, s, m, h or d")
        seconds = float(match.group(1)) * _DURATION_FACTORS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    return f"{seconds:g}s"


def parse_memory(value: object) -> int:
    """Bytes from ``268435456``, ``"256Mi"``, ``"1Gi"``, ``"512M"``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("memory must be a whole number of bytes or a string like '256Mi'")
    if isinstance(value, int):
        amount = value
    else:
        match = _MEMORY.match(value)
        if match is None:
            raise ValueError(f"invalid memory size {value!r}: use e.g. 128Mi, 1Gi or 500M")
        amount = int(float(match.group(1)) * _MEMORY_FACTORS[match.group(2)])
    if amount < 0:
        raise ValueError("memory cannot be negative")
    return amount


def format_memory(amount: int) -> str:
    for suffix, factor in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if amount >= factor and amount % factor == 0:
            return f"{amount // factor}{suffix}"
    return str(amount)
