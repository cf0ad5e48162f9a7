"""System level: each spec variant applied to a throw-away platform. One harvest (a direct
call of wharvester, as the timer would make it) publishes a reading per station; the MQ trigger
feeds them to wprocessor; the results arrive on weather-processed and the broken sensor's
reading, after the retries, on weather-errors. (The spec is applied from a copy whose topic
names carry a suffix of the test's own, as a shared broker needs.)

``specs`` runs on the embedded broker; ``specs-nats`` on the NATS server at 127.0.0.1:4222 (with
JetStream): skipped when none answers there, failed under CI=true. ``specs-kafka`` is checked
offline (``fissile spec validate``) and against a platform (``fissile spec diff``), not run:
that needs a Kafka broker (tests/system/test_weather.py runs the pipeline on a Kafka-protocol
one).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import wharvester
import wprocessor
import yaml

from fissile.testing import Platform

EXAMPLE = Path(__file__).resolve().parent.parent
STATIONS = wharvester.DEFAULT_STATIONS.split(",")
BROKER_FIELDS = {"mqtype", "broker_url", "WEATHER_MQTYPE", "WEATHER_BROKER_URL"}


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def messages(platform: Platform, topic: str, mqtype: str) -> list[bytes]:
    args = ["topic", "consume", "--topic", topic, "--mqtype", mqtype, "-o", "json"]
    out = platform.cli(*args, "--count", "100", "--wait", "1s").out
    return [base64.b64decode(message["body_base64"]) for message in json.loads(out)]


def documents(specdir: str) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((EXAMPLE / specdir).glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            kind = document["kind"]
            # A directory has one deployment config, whatever its name.
            found[kind if kind == "DeploymentConfig" else f"{kind}/{document['name']}"] = document
    return found


def without_broker(document: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in document.items() if k not in BROKER_FIELDS}
    if "env_vars" in kept:
        kept["env_vars"] = {k: v for k, v in kept["env_vars"].items() if k not in BROKER_FIELDS}
    return kept


@pytest.mark.parametrize("variant", ["specs-nats", "specs-kafka"])
def test_the_variants_differ_only_in_the_broker(variant: str) -> None:
    embedded, other = documents("specs"), documents(variant)
    assert set(other) == set(embedded)
    for key, document in embedded.items():
        if key == "DeploymentConfig":
            assert other[key]["id"] != document["id"], "each variant needs its own id"
            continue
        assert without_broker(other[key]) == without_broker(document), key
    mqtype = variant.removeprefix("specs-")
    trigger = other["MessageQueueTrigger/weather-readings"]
    harvester = other["Function/wharvester"]["env_vars"]
    assert trigger["mqtype"] == harvester["WEATHER_MQTYPE"] == mqtype
    assert trigger["broker_url"] == harvester["WEATHER_BROKER_URL"]


@pytest.mark.parametrize("variant", ["specs", "specs-nats", "specs-kafka"])
def test_every_variant_validates(variant: str) -> None:
    validated = subprocess.run(
        [sys.executable, "-m", "fissile", "spec", "validate", "--dir", variant],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    expected = f"{variant} is valid: 2 packages, 2 functions, 1 timetriggers, 1 mqtriggers"
    assert validated.stdout.strip() == expected


def project_for(tmp_path: Path, variant: str) -> tuple[Path, dict[str, str]]:
    """The example, copied, with topics of this test's own: a network broker is shared with
    other runs, which must not read this one's messages."""
    project = tmp_path / "weather"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    suffix = uuid.uuid4().hex[:10]
    topics = {k: f"weather-{k}-{suffix}" for k in ("readings", "processed", "errors")}
    path = project / variant / "weather.yaml"
    documents = list(yaml.safe_load_all(path.read_text()))
    for document in documents:
        if document["name"] == "wharvester":
            document["env_vars"]["WEATHER_TOPIC"] = topics["readings"]
        elif document["kind"] == "MessageQueueTrigger":
            document.update(
                topic=topics["readings"],
                resptopic=topics["processed"],
                errortopic=topics["errors"],
            )
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return project / variant, topics


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "mqtype"), [("specs", "embedded"), ("specs-nats", "nats")])
def test_one_harvest_through_the_pipeline(
    fissile_platform_fn: Platform, tmp_path: Path, variant: str, mqtype: str
) -> None:
    if mqtype == "nats" and not listening(4222):
        reason = "no NATS server listens at 127.0.0.1:4222"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (required when CI=true)")
        pytest.skip(reason)
    platform = fissile_platform_fn
    if mqtype == "embedded":
        # The Kafka variant against a platform: what apply would do, without a broker.
        diff = platform.cli("spec", "diff", "--dir", "specs-kafka", cwd=EXAMPLE).out
        assert diff.strip().splitlines()[-1] == "6 to create, 0 to update, 0 to delete, 0 unchanged"
    specdir, topics = project_for(tmp_path, variant)
    platform.apply(specdir)

    def consuming() -> bool:
        trigger = platform.cli("mqt", "get", "--name", "weather-readings", "-o", "json").out
        return bool(json.loads(trigger)["status"]["state"] == "running")

    platform.wait_for(consuming, timeout=60, what="the MQ trigger consuming")

    harvested = platform.call("wharvester", b"")
    assert harvested.status_code == 200, harvested.text
    slot = harvested.json()["slot"]
    assert harvested.json()["published"] == len(STATIONS)
    readings = {s: wharvester.reading(s, slot) for s in STATIONS}

    # The timer's runs, if one falls in the test, are told apart by the slot.
    results: dict[str, Any] = {}
    reports: list[dict[str, Any]] = []

    def settled() -> bool:
        for body in messages(platform, topics["processed"], mqtype):
            result = json.loads(body)
            if result["slot"] == slot:
                results[result["station"]] = result
        for body in messages(platform, topics["errors"], mqtype):
            report = json.loads(body)
            reading = json.loads(base64.b64decode(report["message"]["body_base64"]))
            if reading["slot"] == slot:
                reports.append(report)
        return len(results) == len(STATIONS) - 1 and len(reports) == 1

    platform.wait_for(settled, timeout=45, what=f"every reading of {slot} processed or failed")
    for station, result in results.items():
        assert result == wprocessor.process(readings[station])
    assert "broken-sensor" not in results
    assert reports[0]["attempts"] == 3 and reports[0]["function"] == "wprocessor"
    assert "no temperature" in reports[0]["response"]
