"""Message-queue triggers on the embedded broker, driven through the CLI: responses, retries
then the error topic, a broken broker reported in `mqt get`, and the graph rules."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from syskit import Platform, assert_one_line_error, write
from trigkit import read_topic, unique

DOUBLER = """
def main(request):
    data = request.json()
    if data.get("fail"):
        raise ValueError("cannot double " + str(data["n"]))
    attempt = request.headers["x-fissile-attempt"]
    return {"n": data["n"], "double": data["n"] * 2, "attempt": attempt}
"""


@pytest.fixture(scope="module")
def doubler(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> str:
    source = write(tmp_path_factory.mktemp("mqt") / "doubler.py", DOUBLER)
    platform.ok("fn", "create", "--name", "mq-doubler", "--code", str(source))
    return "mq-doubler"


def test_messages_become_calls_and_failures_go_to_the_error_topic(
    platform: Platform, doubler: str
) -> None:
    topic, resp, errors = unique("in"), unique("out"), unique("err")
    platform.ok(
        "mqt",
        "create",
        "--name",
        "mq-basic",
        "--function",
        doubler,
        "--topic",
        topic,
        "--resptopic",
        resp,
        "--errortopic",
        errors,
        "--maxretries",
        "2",
    )
    for n in (1, 2, 3):
        body = json.dumps({"n": n, "fail": n == 2})
        platform.ok("topic", "publish", "--topic", topic, "--body", body)

    answers = read_topic("embedded", resp, 2, data_dir=platform.data_dir)
    assert sorted(json.loads(m.body)["double"] for m in answers) == [2, 6]
    assert all(m.headers["content-type"] == "application/json" for m in answers)

    (failed,) = read_topic("embedded", errors, 1, data_dir=platform.data_dir)
    report = json.loads(failed.body)
    assert report["attempts"] == 3  # the first try and two retries
    assert report["status"] == 500
    assert "cannot double 2" in report["response"]
    assert json.loads(base64.b64decode(report["message"]["body_base64"])) == {"n": 2, "fail": True}
    assert report["message"]["topic"] == topic

    status = platform.json_of("mqt", "get", "--name", "mq-basic")["status"]
    assert status == {"state": "running", "error": None, "processed": 2, "failed": 1, "inflight": 0}
    platform.ok("mqt", "delete", "--name", "mq-basic")


def test_a_broken_broker_url_is_reported_not_fatal(platform: Platform, doubler: str) -> None:
    platform.ok(
        "mqt",
        "create",
        "--name",
        "mq-broken",
        "--function",
        doubler,
        "--mqtype",
        "redis",
        "--topic",
        unique("in"),
        "--broker-url",
        "redis://127.0.0.1:1/0",
    )
    deadline = time.monotonic() + 10
    while True:
        status = platform.json_of("mqt", "get", "--name", "mq-broken")["status"]
        if status["state"] == "error" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status["state"] == "error", status
    assert "127.0.0.1:1" in status["error"]
    listed = platform.ok("mqt", "list").out
    assert "mq-broken" in listed and "error" in listed
    # The platform goes on serving.
    assert platform.get("/_fissile/healthz").status_code == 200
    platform.ok("mqt", "delete", "--name", "mq-broken")


def test_a_function_used_by_a_trigger_cannot_be_deleted(platform: Platform, tmp_path: Path) -> None:
    source = write(tmp_path / "kept.py", "def main(request):\n    return 'ok'\n")
    platform.ok("fn", "create", "--name", "mq-kept", "--code", str(source))
    platform.ok("mqt", "create", "--name", "mq-keeper", "--function", "mq-kept", "--topic", "t")
    result = platform.cli("fn", "delete", "--name", "mq-kept")
    assert_one_line_error(result, "in use by message queue trigger 'mq-keeper'")
    missing = platform.cli("mqt", "create", "--name", "mq-x", "--function", "nope", "--topic", "t")
    assert_one_line_error(missing, "function 'nope' not found")
    same = platform.cli(
        "mqt",
        "create",
        "--name",
        "mq-y",
        "--function",
        "mq-kept",
        "--topic",
        "t",
        "--resptopic",
        "t",
    )
    assert_one_line_error(same, "must differ from topic")
    platform.ok("mqt", "delete", "--name", "mq-keeper")
    platform.ok("fn", "delete", "--name", "mq-kept")


def test_publish_refusals_are_clear(platform: Platform) -> None:
    bad = platform.cli("topic", "publish", "--topic", "no spaces", "--body", "x")
    assert_one_line_error(bad, "invalid topic")
    down = platform.cli(
        "topic",
        "publish",
        "--mqtype",
        "nats",
        "--topic",
        "t",
        "--body",
        "x",
        "--broker-url",
        "nats://127.0.0.1:1",
    )
    assert down.rc == 1 and "127.0.0.1:1" in down.err, down


def test_an_update_moves_the_consumer_to_the_new_topic(platform: Platform, doubler: str) -> None:
    first, second, out = unique("in"), unique("in"), unique("out")
    platform.ok(
        "mqt",
        "create",
        "--name",
        "mq-moving",
        "--function",
        doubler,
        "--topic",
        first,
        "--resptopic",
        out,
    )
    platform.ok("topic", "publish", "--topic", first, "--body", '{"n": 1}')
    (before,) = read_topic("embedded", out, 1, data_dir=platform.data_dir)
    assert json.loads(before.body)["double"] == 2
    platform.ok("mqt", "update", "--name", "mq-moving", "--topic", second)
    platform.ok("topic", "publish", "--topic", second, "--body", '{"n": 5}')
    platform.ok("topic", "publish", "--topic", first, "--body", '{"n": 100}')
    # A new reader sees only what no group had yet: the answers read above are pruned.
    answers = read_topic("embedded", out, 1, data_dir=platform.data_dir, settle=1.0)
    platform.ok("mqt", "delete", "--name", "mq-moving")
    assert [json.loads(m.body)["double"] for m in answers] == [10]


def test_topic_consume_reads_each_message_once_per_group(platform: Platform) -> None:
    topic = unique("peek")
    platform.ok("topic", "publish", "--topic", topic, "--body", '{"a": 1}')
    platform.ok("topic", "publish", "--topic", topic, "--body", "second line")
    first = platform.ok("topic", "consume", "--topic", topic, "--group", "peeker")
    assert first.out.splitlines() == ['{"a": 1}', "second line"]
    again = platform.ok("topic", "consume", "--topic", topic, "--group", "peeker", "--wait", "0")
    assert again.out == ""
    platform.ok("topic", "publish", "--topic", topic, "--body", "third")
    (message,) = platform.json_of("topic", "consume", "--topic", topic, "--group", "peeker")
    assert base64.b64decode(message["body_base64"]) == b"third"
    assert message["headers"] == {"content-type": "application/octet-stream"}
    bad = platform.cli("topic", "consume", "--topic", topic, "--mqtype", "redis",
                       "--broker-url", "redis://127.0.0.1:1/0", "--wait", "0")  # fmt: skip
    assert_one_line_error(bad, "127.0.0.1:1")
