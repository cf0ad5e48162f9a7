"""Function logs as a user reads them: what a function logs (``context.logger``, the root
logger, Flask's ``current_app.logger``) and prints, each line with its level and the id of the
invocation it was written for; ``fn logs`` filtered by level, time and instance, and as JSON."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from syskit import FISSILE, Platform, wait_for, write

NATIVE = """
import logging
import sys


def main(request, context):
    n = request.query["n"]
    context.logger.info("ctx-info %s", n)
    context.logger.warning("ctx-warning %s", n)
    logging.getLogger().error("root-error %s", n)
    logging.info("root-info %s", n)
    logging.debug("root-debug %s", n)
    print("printed", n)
    print("to-stderr", n, file=sys.stderr)
    if n == "boom":
        raise ValueError("boom")
    return context.invocation_id
"""

CONCURRENT = """
import asyncio
import logging


async def main(request, context):
    n = request.query["n"]
    logging.info("start %s", n)
    await asyncio.sleep(0.3)  # the other calls log while this one waits
    print("end", n)
    return context.invocation_id
"""

FLASK = """
from flask import current_app, request


def main():
    current_app.logger.info("flask-info %s", request.args["n"])
    return request.headers["X-Fissile-Invocation-Id"]
"""

LAMBDA = """
import logging

logger = logging.getLogger()
logger.setLevel(logging.INFO)


def handler(event, context):
    logger.info("lambda-info %s", event["queryStringParameters"]["n"])
    return {"statusCode": 200, "body": context.aws_request_id}
"""


@pytest.fixture(scope="module")
def logging_fns(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Platform:
    root = tmp_path_factory.mktemp("function-logs")
    flask_src = write(root / "flask" / "main.py", FLASK).parent
    lambda_src = write(root / "lambda" / "app.py", LAMBDA).parent
    platform.ok_many(
        ("fn", "create", "--name", "lg-native", "--code", str(write(root / "n.py", NATIVE))),
        ("fn", "create", "--name", "lg-async", "--code", str(write(root / "a.py", CONCURRENT))),
        (
            "fn", "create", "--name", "lg-flask", "--src", str(flask_src),
            "--entrypoint", "main.main", "--contract", "fission",
        ),
        (
            "fn", "create", "--name", "lg-lambda", "--src", str(lambda_src),
            "--entrypoint", "app.handler", "--contract", "lambda",
        ),
    )  # fmt: skip
    return platform


def entries(platform: Platform, name: str, *flags: str) -> list[dict[str, Any]]:
    out = platform.ok("fn", "logs", "--name", name, "-o", "json", *flags).out
    return [json.loads(line) for line in out.splitlines()]


def logged(platform: Platform, name: str, *messages: str) -> list[dict[str, Any]]:
    """The log's entries once every one of ``messages`` is in it."""

    def complete() -> list[dict[str, Any]] | None:
        found = entries(platform, name)
        have = {entry["message"] for entry in found}
        return found if set(messages) <= have else None

    result: list[dict[str, Any]] = wait_for(complete, 10, f"{messages} in {name}'s log")
    return result


def by_message(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["message"]: entry for entry in found}


def test_levels_and_invocation_ids(logging_fns: Platform) -> None:
    response = logging_fns.get("/function/lg-native?n=1")
    assert response.status_code == 200
    invocation = response.text
    assert invocation
    expected = {
        "ctx-info 1": "INFO",
        "ctx-warning 1": "WARNING",
        "root-error 1": "ERROR",
        "root-info 1": "INFO",
        "printed 1": "STDOUT",
        "to-stderr 1": "STDERR",
    }
    found = by_message(logged(logging_fns, "lg-native", *expected))
    for message, level in expected.items():
        entry = found[message]
        assert (entry["level"], entry["invocation_id"]) == (level, invocation), entry
        assert entry["source"] == "function" and entry["instance"]
    assert "root-debug 1" not in found  # below INFO
    # The text form says the same, one line each.
    text = logging_fns.ok("fn", "logs", "--name", "lg-native").out
    line = next(line for line in text.splitlines() if line.endswith(" ctx-warning 1"))
    time, instance, level, tag, _ = line.split(" ", 4)
    assert (instance, level, tag) == (
        found["ctx-warning 1"]["instance"],
        "WARNING",
        f"[{invocation}]",
    )
    assert time == found["ctx-warning 1"]["time"]
    ready = [e for e in found.values() if e["source"] == "platform" and "ready" in e["message"]]
    assert ready and ready[0]["instance"] is None and ready[0]["level"] == "INFO"
    assert " fissile INFO [-] instance " in text


def test_an_uncaught_exception_is_error(logging_fns: Platform) -> None:
    assert logging_fns.get("/function/lg-native?n=boom").status_code == 500
    found = logged(logging_fns, "lg-native", "ValueError: boom", "printed boom")
    invocation = by_message(found)["printed boom"]["invocation_id"]
    trace = [e for e in found if e["invocation_id"] == invocation and e["level"] == "ERROR"]
    messages = [e["message"] for e in trace]
    assert messages[0] == "root-error boom"
    assert "Traceback (most recent call last):" in messages and messages[-1] == "ValueError: boom"


def test_flask_logger(logging_fns: Platform) -> None:
    response = logging_fns.get("/function/lg-flask?n=7")
    assert response.status_code == 200, response.text
    found = logged(logging_fns, "lg-flask", "flask-info 7")
    lines = [e for e in found if "flask-info 7" in e["message"]]
    assert len(lines) == 1, lines  # once: not also through a handler of Flask's own
    assert lines[0]["level"] == "INFO"
    assert lines[0]["invocation_id"] == response.text


def test_lambda_root_logger(logging_fns: Platform) -> None:
    response = logging_fns.get("/function/lg-lambda?n=5")
    assert response.status_code == 200, response.text
    (entry,) = [
        e for e in logged(logging_fns, "lg-lambda", "lambda-info 5") if "lambda" in e["message"]
    ]
    assert (entry["level"], entry["invocation_id"]) == ("INFO", response.text)


def test_concurrent_calls_keep_their_own_ids(logging_fns: Platform) -> None:
    assert logging_fns.get("/function/lg-async?n=warm").status_code == 200  # an instance up
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda n: logging_fns.get(f"/function/lg-async?n={n}"), range(4)))
    ids = {n: answer.text for n, answer in enumerate(answers)}
    assert all(answer.status_code == 200 for answer in answers)
    assert len(set(ids.values())) == 4
    messages = [f"start {n}" for n in ids] + [f"end {n}" for n in ids]
    found = by_message(logged(logging_fns, "lg-async", *messages))
    for n, invocation in ids.items():
        assert found[f"start {n}"]["invocation_id"] == invocation
        assert found[f"end {n}"]["invocation_id"] == invocation
    # Some calls shared an instance (concurrency 100; a loaded host may add one more).
    assert len({found[m]["instance"] for m in messages}) < len(ids)


def test_filters(logging_fns: Platform) -> None:
    assert logging_fns.get("/function/lg-native?n=2").status_code == 200
    first = logged(logging_fns, "lg-native", "printed 2")
    instance = by_message(first)["printed 2"]["instance"]

    warnings = entries(logging_fns, "lg-native", "--level", "warning")
    levels = {e["level"] for e in warnings}
    assert levels <= {"WARNING", "STDERR", "ERROR", "CRITICAL"} and "WARNING" in levels
    assert "ctx-warning 2" in by_message(warnings) and "ctx-info 2" not in by_message(warnings)
    text = logging_fns.ok("fn", "logs", "--name", "lg-native", "--level", "WARNING").out
    assert " INFO " not in text and "ctx-warning 2" in text

    mine = entries(logging_fns, "lg-native", "--instance", instance)
    assert mine and all(e["instance"] == instance for e in mine)
    platform_only = entries(logging_fns, "lg-native", "--instance", "fissile")
    assert platform_only and all(e["source"] == "platform" for e in platform_only)
    assert entries(logging_fns, "lg-native", "--instance", "no-such-instance") == []

    # --since: an ISO time just after the last line of call 2, then a duration.
    last = max(e["time"] for e in first)
    after = datetime.fromisoformat(last) + timedelta(milliseconds=1)
    since = after.isoformat(timespec="milliseconds")
    assert logging_fns.get("/function/lg-native?n=3").status_code == 200
    logged(logging_fns, "lg-native", "printed 3")
    later = by_message(entries(logging_fns, "lg-native", "--since", since))
    assert "printed 3" in later and "printed 2" not in later
    recent = by_message(entries(logging_fns, "lg-native", "--since", "10m"))
    assert "printed 2" in recent and "printed 3" in recent

    bad = logging_fns.cli("fn", "logs", "--name", "lg-native", "--since", "yesterday")
    assert bad.rc != 0 and "invalid --since" in bad.err, bad


def test_follow_with_a_filter(logging_fns: Platform) -> None:
    env = {**os.environ, "FISSILE_API": logging_fns.api_url}
    env.pop("FISSILE_TOKEN", None)
    env["FISSILE_DATA_DIR"] = str(logging_fns.data_dir)  # where the CLI finds the token
    command = [str(FISSILE), "fn", "logs", "--name", "lg-native", "--follow", "--tail", "0"]
    follower = subprocess.Popen(
        [*command, "--level", "error", "-o", "json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert follower.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(follower.stdout, selectors.EVENT_READ)
        # Called until the follower, which starts meanwhile, shows a line: with --tail 0 it
        # shows only what is written once it reads.
        deadline = time.monotonic() + 20
        n = 100
        while not selector.select(0.5):
            assert time.monotonic() < deadline, "nothing followed"
            n += 1
            assert logging_fns.get(f"/function/lg-native?n={n}").status_code == 200
        line = follower.stdout.readline()
        assert line, follower.stderr.read() if follower.stderr else ""
        entry = json.loads(line)
        assert entry["level"] == "ERROR" and entry["message"].startswith("root-error ")
    finally:
        follower.terminate()
        follower.wait(10)
