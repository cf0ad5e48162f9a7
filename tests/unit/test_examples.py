"""The examples stay deployable: their specs validate, and the weather functions agree."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from fissile.specs.validate import load_specs

WEATHER = Path(__file__).resolve().parents[2] / "examples" / "weather"


def module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, WEATHER / f"{name}.py")
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def test_weather_specs_validate() -> None:
    loaded = load_specs(WEATHER / "specs")
    assert loaded.errors == [] and loaded.warnings == []
    kinds = {(r.kind, r.name) for r in loaded.resources}
    assert {
        ("functions", "wharvester"),
        ("functions", "wprocessor"),
        ("mqtriggers", "weather-readings"),
        ("timetriggers", "weather-harvest"),
    } <= kinds


def test_processor_handles_every_reading_but_the_broken_sensor() -> None:
    harvester, processor = module("wharvester"), module("wprocessor")
    reading = harvester.reading("oslo", "2026-01-01T00:00:00+00:00")
    assert reading == harvester.reading("oslo", "2026-01-01T00:00:00+00:00")  # deterministic
    result = processor.process(reading)
    assert result["temp_f"] == round(reading["temp_c"] * 9 / 5 + 32, 1)
    assert result["category"] in ("freezing", "stormy", "hot", "mild")
    with pytest.raises(ValueError, match="no temperature"):
        processor.process(harvester.reading("broken-sensor", "2026-01-01T00:00:00+00:00"))
