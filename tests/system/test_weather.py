"""The seed's weather pipeline (examples/weather), deployed with `fissile spec apply`, once per
broker: a timer runs wharvester, which publishes readings (context.publish); an MQ trigger
feeds them to wprocessor; results go to the response topic, and the readings of a broken sensor
(wprocessor raises) to the error topic after the retries, without holding up the others.
Midway, fissile is killed with SIGKILL while a backlog waits, and started again on the same
data dir: every reading published is still processed.

Each test has its own topics (shared brokers) and its own platform: about 20-30 s each.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from syskit import Platform, Spawn
from trigkit import Collector, unique

from fissile.models import MQTYPES

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "weather"
STATIONS = ["oslo", "lima", "nairobi", "perth", "reykjavik", "cairo", "quito", "broken-sensor"]
MAXRETRIES = 2
SETTLE_TIMEOUT = 90.0


@contextmanager
def running_broker(mqtype: str) -> Iterator[str | None]:
    if mqtype == "embedded":
        yield None
        return
    from integration.brokerkit import broker_url

    with broker_url(mqtype) as url:
        yield url


def load_process() -> Any:
    spec = importlib.util.spec_from_file_location("wprocessor", EXAMPLE / "wprocessor.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.process


def project_for(tmp_path: Path, mqtype: str, url: str | None, topics: dict[str, str]) -> Path:
    """The example, copied, with this test's broker, topics and a fast schedule."""
    project = tmp_path / "weather"
    shutil.copytree(EXAMPLE, project)
    path = project / "specs" / "weather.yaml"
    documents = list(yaml.safe_load_all(path.read_text()))
    for document in documents:
        if document["name"] == "wharvester":
            document["env_vars"] = {
                "WEATHER_TOPIC": topics["readings"],
                "WEATHER_MQTYPE": mqtype,
                "WEATHER_BROKER_URL": url or "",
                "WEATHER_STATIONS": ",".join(STATIONS),
            }
        elif document["name"] == "wprocessor":
            # Slower than the readings come, so a backlog waits when fissile is killed.
            document["env_vars"] = {"WEATHER_PROCESS_DELAY": "0.15"}
        elif document["kind"] == "MessageQueueTrigger":
            document.update(
                mqtype=mqtype,
                topic=topics["readings"],
                resptopic=topics["processed"],
                errortopic=topics["errors"],
                maxretries=MAXRETRIES,
            )
            if url:
                document["broker_url"] = url
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    timer = project / "specs" / "timer.yaml"
    document = yaml.safe_load(timer.read_text())
    document["cron"] = "* * * * * *"
    # Held back until the trigger's consumer group exists (a new group starts at the newest
    # message on these brokers).
    (project / "timer.later").write_text(yaml.safe_dump(document, sort_keys=False))
    timer.unlink()
    return project


def wait_consuming(platform: Platform, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = platform.json_of("mqt", "get", "--name", "weather-readings")["status"]
        if status["state"] == "running":
            return
        assert time.monotonic() < deadline, f"the MQ trigger is not consuming: {status}"
        time.sleep(0.2)


def ids(messages: list[Any]) -> set[str]:
    return {json.loads(m.body)["id"] for m in messages}


@pytest.mark.parametrize("mqtype", MQTYPES)
def test_weather_pipeline_survives_sigkill(mqtype: str, spawn: Spawn, tmp_path: Path) -> None:
    process = load_process()
    topics = {kind: unique(f"weather-{kind}") for kind in ("readings", "processed", "errors")}
    with running_broker(mqtype) as url:
        first = spawn()
        data_dir = first.data_dir
        project = project_for(tmp_path, mqtype, url, topics)
        with Collector(mqtype, list(topics.values()), url=url, data_dir=data_dir) as seen:
            first.ok("spec", "apply", "--wait", cwd=project)
            wait_consuming(first)
            shutil.move(project / "timer.later", project / "specs" / "timer.yaml")
            first.ok("spec", "apply", cwd=project)

            # Let readings pile up, then kill fissile in the middle of the stream.
            deadline = time.monotonic() + 30
            while len(seen.got(topics["readings"])) < 3 * len(STATIONS):
                assert time.monotonic() < deadline, "wharvester published too little"
                time.sleep(0.1)
            first.stop(signal.SIGKILL)
            time.sleep(0.5)  # what was in flight is not answered any more
            published = ids(seen.got(topics["readings"]))
            done = ids(seen.got(topics["processed"]))
            backlog = published - done - {i for i in published if i.startswith("broken-sensor")}
            assert backlog, "fissile was not killed mid-stream: nothing was waiting"

            second = spawn(data_dir)
            time.sleep(2.0)  # a few more harvests
            second.ok("timer", "delete", "--name", "weather-harvest")
            time.sleep(1.0)  # a run that had started finishes publishing

            bodies = [json.loads(m.body) for m in seen.got(topics["readings"])]
            readings = {body["id"]: body for body in bodies}
            valid = {i for i, r in readings.items() if r["temp_c"] is not None}
            broken = set(readings) - valid
            deadline = time.monotonic() + SETTLE_TIMEOUT
            while ids(seen.got(topics["processed"])) != valid or _failed(seen, topics) != broken:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            results = [json.loads(m.body) for m in seen.got(topics["processed"])]
            reports = [json.loads(m.body) for m in seen.got(topics["errors"])]
            status = second.json_of("mqt", "get", "--name", "weather-readings")["status"]

        assert len(readings) == len(seen.got(topics["readings"])), "wharvester published twice"
        assert broken and valid
        got = {r["id"] for r in results}
        assert got - valid == set(), "results for readings never published"
        assert valid - got == set(), f"lost: {sorted(valid - got)} (consumer: {status})"
        for result in results:
            assert result == process(readings[result["id"]])
        # At least once: a message in flight at the kill may be processed twice, never more.
        duplicates = len(results) - len(got)
        assert duplicates <= 2, duplicates

        failed = {json.loads(base64.b64decode(r["message"]["body_base64"]))["id"] for r in reports}
        assert failed == broken
        for report in reports:
            assert report["attempts"] == MAXRETRIES + 1
            assert report["status"] == 500
            assert "no temperature" in report["response"]
            assert report["function"] == "wprocessor"
        second.stop_cleanly()


def _failed(seen: Collector, topics: dict[str, str]) -> set[str]:
    return {
        json.loads(base64.b64decode(json.loads(m.body)["message"]["body_base64"]))["id"]
        for m in seen.got(topics["errors"])
    }
