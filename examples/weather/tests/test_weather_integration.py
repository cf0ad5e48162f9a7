"""Integration level: both functions in real instance subprocesses: what wharvester publishes
(to the fake platform of ``local_instance``) is what wprocessor is then given."""

from __future__ import annotations

from pathlib import Path

from fissile.testing import local_instance

EXAMPLE = Path(__file__).resolve().parent.parent


def test_harvested_readings_through_the_processor() -> None:
    env = {"WEATHER_STATIONS": "oslo,nairobi,broken-sensor", "WEATHER_TOPIC": "readings"}
    with local_instance(EXAMPLE / "wharvester.py", env=env) as harvester:
        answer = harvester.post("/", headers={"X-Fissile-Timer-Slot": "slot-1"})
        assert answer.json() == {"slot": "slot-1", "published": 3}
        readings = [p.body for p in harvester.published]
        assert {p.topic for p in harvester.published} == {"readings"}

    with local_instance(EXAMPLE / "wprocessor.py") as processor:
        results = [
            processor.post("/", body=body, headers={"content-type": "application/json"})
            for body in readings
        ]
        assert [r.status for r in results] == [200, 200, 500]
        assert [r.json()["station"] for r in results[:2]] == ["oslo", "nairobi"]
        assert "reading broken-sensor/slot-1: no temperature" in results[2].text
        assert "ValueError" in processor.output()
