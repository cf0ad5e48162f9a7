"""Watch triggers: a function called with platform events as a JSON body."""

from __future__ import annotations

import json
from pathlib import Path

from syskit import Platform, assert_one_line_error, write
from trigkit import wait_for_lines

WATCHER = """
import json

def main(request):
    print("EVENT", request.headers["x-fissile-event-type"], json.dumps(request.json()), flush=True)
    return "ok"
"""


def test_a_watch_fires_on_function_created(platform: Platform, tmp_path: Path) -> None:
    source = write(tmp_path / "watcher.py", WATCHER)
    platform.ok("fn", "create", "--name", "watcher", "--code", str(source))
    platform.ok(
        "watch",
        "create",
        "--name",
        "on-create",
        "--function",
        "watcher",
        "--event",
        "function.created",
    )
    other = write(tmp_path / "other.py", "def main(request):\n    return 'hi'\n")
    platform.ok("fn", "create", "--name", "watched-new", "--code", str(other))
    lines = wait_for_lines(platform.data_dir, "watcher", "EVENT ", 1, timeout=10)
    platform.ok("watch", "delete", "--name", "on-create")
    assert lines, "the watcher was not called"
    kinds = [words[0] for words in lines]
    assert kinds == ["function.created"], lines
    event = json.loads(" ".join(lines[0][1:]))
    assert event["type"] == "function.created"
    assert event["data"]["function"] == "watched-new"
    assert {"id", "time"} <= set(event)
    assert "on-create" not in platform.ok("watch", "list").out
    platform.ok("fn", "delete", "--name", "watched-new")


def test_unknown_events_are_refused(platform: Platform, tmp_path: Path) -> None:
    source = write(tmp_path / "watcher.py", WATCHER)
    platform.ok("fn", "create", "--name", "watcher-2", "--code", str(source))
    result = platform.cli(
        "watch", "create", "--name", "w", "--function", "watcher-2", "--event", "function.eaten"
    )
    assert_one_line_error(result, "unknown event 'function.eaten'")


def test_a_watch_fires_on_instance_crashed(platform: Platform, tmp_path: Path) -> None:
    source = write(tmp_path / "watcher.py", WATCHER)
    platform.ok("fn", "create", "--name", "crash-watcher", "--code", str(source))
    crasher = write(tmp_path / "crasher.py", "import os\n\ndef main(request):\n    os._exit(3)\n")
    platform.ok("fn", "create", "--name", "watched-crasher", "--code", str(crasher))
    platform.ok(
        "watch",
        "create",
        "--name",
        "on-crash",
        "--function",
        "crash-watcher",
        "--event",
        "instance.*",
    )
    assert platform.get("/function/watched-crasher").status_code == 502
    lines = wait_for_lines(platform.data_dir, "crash-watcher", "EVENT ", 1, timeout=10)
    platform.ok("watch", "delete", "--name", "on-crash")
    assert lines, "the watcher was not called"
    event = json.loads(" ".join(lines[0][1:]))
    assert event["type"] == "instance.crashed"
    assert event["data"]["function"] == "watched-crasher"
    assert "exited with status 3" in event["data"]["reason"]
