"""Unit level: wharvester and wprocessor as function objects; wharvester's publishes are
recorded by the fake context."""

from __future__ import annotations

from typing import Any

import pytest
import wharvester
import wprocessor

from fissile.testing import Published, call, make_context, make_request

SLOT = "2026-01-01T06:00:00+00:00"


def harvest(monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[Any, list[Published]]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    context = make_context("wharvester")
    request = make_request("POST", "/", headers={"X-Fissile-Timer-Slot": SLOT})
    result = call(wharvester.main, request, context)
    assert result.status == 200
    return result.json(), context.published


def test_one_reading_per_station_on_the_embedded_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEATHER_MQTYPE", raising=False)
    answer, published = harvest(monkeypatch, WEATHER_STATIONS="oslo,broken-sensor")
    assert answer == {"slot": SLOT, "published": 2}
    assert [(p.topic, p.mqtype, p.broker_url) for p in published] == [
        ("weather-readings", "embedded", None)
    ] * 2
    oslo, broken = (p.json() for p in published)
    assert oslo == wharvester.reading("oslo", SLOT)
    assert oslo["id"] == f"oslo/{SLOT}" and isinstance(oslo["temp_c"], float)
    assert broken["temp_c"] is None


def test_the_broker_variants_publish_where_their_spec_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, published = harvest(
        monkeypatch,
        WEATHER_STATIONS="lima",
        WEATHER_MQTYPE="nats",
        WEATHER_BROKER_URL="nats://127.0.0.1:4222",
        WEATHER_TOPIC="readings-elsewhere",
    )
    assert [(p.topic, p.mqtype, p.broker_url) for p in published] == [
        ("readings-elsewhere", "nats", "nats://127.0.0.1:4222")
    ]


def test_readings_are_the_same_for_a_station_and_slot() -> None:
    assert wharvester.reading("perth", SLOT) == wharvester.reading("perth", SLOT)
    assert wharvester.reading("perth", SLOT) != wharvester.reading("perth", "another slot")


@pytest.mark.parametrize(
    ("temp_c", "wind_kmh", "category"),
    [(-3.0, 10, "freezing"), (12.0, 80, "stormy"), (31.5, 5, "hot"), (18.0, 20, "mild")],
)
def test_processing_converts_and_categorizes(temp_c: float, wind_kmh: int, category: str) -> None:
    raw = {"id": "x/1", "station": "x", "slot": "1", "temp_c": temp_c, "humidity": 40}
    request = make_request("POST", "/", json={**raw, "wind_kmh": wind_kmh})
    processed = call(wprocessor.main, request).json()
    assert processed["category"] == category
    assert processed["temp_f"] == round(temp_c * 9 / 5 + 32, 1)


def test_a_reading_without_temperature_raises() -> None:
    request = make_request("POST", "/", json=wharvester.reading("broken-sensor", SLOT))
    with pytest.raises(ValueError, match="no temperature"):
        call(wprocessor.main, request)
    answer = call(wprocessor.main, request, raise_errors=False)
    assert answer.status == 500 and "no temperature" in answer.text
