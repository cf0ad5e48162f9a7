"""Functions as a user lives with them: Fission-style code, logs, scaling to zero, bodies,
deletion, their own environments."""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from syskit import (
    FISSILE,
    Platform,
    assert_one_line_error,
    error_of,
    is_alive,
    wait_gone,
    write,
)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        time.sleep(0.1)


def test_fission_style_reads_flask_request(platform: Platform, tmp_path: Path) -> None:
    write(
        tmp_path / "fission_style.py",
        """
        from flask import request

        def main():
            return "%s name=%s body=%s" % (
                request.method, request.args.get("name"), request.get_data(as_text=True)
            )
        """,
    )
    platform.ok(
        "fn", "create", "--name", "fission-style", "--code", str(tmp_path / "fission_style.py")
    )
    response = platform.request("POST", "/function/fission-style?name=bob", content=b"payload")
    assert response.status_code == 200, response.text
    assert response.text == "POST name=bob body=payload"


def test_function_output_goes_to_its_log(platform: Platform, tmp_path: Path) -> None:
    write(
        tmp_path / "chatty.py",
        """
        import sys

        def main(request):
            print("to-stdout", request.query.get("n"))
            print("to-stderr", request.query.get("n"), file=sys.stderr)
            return "said"
        """,
    )
    platform.ok("fn", "create", "--name", "chatty", "--code", str(tmp_path / "chatty.py"))
    assert platform.get("/function/chatty?n=1").text == "said"

    def logged() -> bool:
        out = platform.ok("fn", "logs", "--name", "chatty").out
        return "to-stdout 1" in out and "to-stderr 1" in out

    wait_for(logged, 5, "the function's output in `fn logs`")
    log = platform.ok("fn", "logs", "--name", "chatty", "--tail", "1").out
    assert len(log.splitlines()) == 1


def test_logs_follow(platform: Platform, tmp_path: Path) -> None:
    write(tmp_path / "follow.py", "def main(request):\n    print('line', request.query['n'])\n")
    platform.ok("fn", "create", "--name", "followed", "--code", str(tmp_path / "follow.py"))
    follower = subprocess.Popen(
        [str(FISSILE), "fn", "logs", "--name", "followed", "--follow"],
        env={
            **os.environ,
            "FISSILE_API": platform.api_url,
            "FISSILE_DATA_DIR": str(platform.data_dir),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert follower.stdout is not None
        os.set_blocking(follower.stdout.fileno(), False)
        selector = selectors.DefaultSelector()
        selector.register(follower.stdout, selectors.EVENT_READ)
        seen = b""
        for n in range(3):
            assert platform.get(f"/function/followed?n={n}").status_code == 204
            deadline = time.monotonic() + 5
            while f"line {n}".encode() not in seen:
                assert time.monotonic() < deadline, seen
                if selector.select(0.2):
                    seen += follower.stdout.read() or b""
        # Deleting the function ends the stream.
        platform.ok("fn", "delete", "--name", "followed")
        assert follower.wait(5) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_idle_instances_are_reaped_and_min_scale_kept(platform: Platform, tmp_path: Path) -> None:
    # Each instance answers an id of its own (pids inside an instance's PID namespace are 1).
    write(
        tmp_path / "idle.py",
        "import uuid\nID = uuid.uuid4().hex\n\ndef main(request):\n    return ID\n",
    )
    # 2 s: short for the test, long beside the few milliseconds between the call and the
    # look at its instance (through the API: a CLI start can take seconds on a loaded host).
    platform.ok_many(
        (
            "fn", "create", "--name", "idler", "--code", str(tmp_path / "idle.py"),
            "--idle-timeout", "2s",
        ),
        (
            "fn", "create", "--name", "keeper", "--code", str(tmp_path / "idle.py"),
            "--idle-timeout", "2s", "--min-scale", "1",
        ),
    )  # fmt: skip
    token = (platform.data_dir / "api-token").read_text().strip()

    def status(name: str) -> dict[str, Any]:
        response = platform.http.get(
            f"{platform.api_url}/v1/functions/{name}",
            headers={"authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()["status"]
        return found

    first_id = platform.get("/function/idler").text
    [first_pid] = status("idler")["pids"]
    [first] = [p for p in platform.children() if p.pid == first_pid]
    keeper_id = platform.get("/function/keeper").text
    wait_for(lambda: status("idler")["instances"] == 0, 60, "the idle instance to be reaped")
    assert not wait_gone([first], 30), "the reaped instance's process is still running"
    # Scaled to zero, it still answers (a cold start).
    assert platform.get("/function/idler").text != first_id
    # min-scale 1 keeps one instance past the idle timeout: the same one.
    assert status("keeper")["instances"] == 1
    assert platform.get("/function/keeper").text == keeper_id


def test_fn_get_shows_current_and_desired_instances(platform: Platform, tmp_path: Path) -> None:
    write(tmp_path / "sync.py", "def main(request):\n    return 'sync'\n")
    write(tmp_path / "aio.py", "async def main(request):\n    return 'async'\n")
    platform.ok("fn", "create", "--name", "scaled-sync", "--code", str(tmp_path / "sync.py"))
    platform.ok("fn", "create", "--name", "scaled-async", "--code", str(tmp_path / "aio.py"))
    shown = platform.ok("fn", "get", "--name", "scaled-sync").out
    assert "Instances:     0 current, 0 desired (0 busy, 0 starting, 0 queued)" in shown, shown
    assert platform.get("/function/scaled-sync").text == "sync"
    assert platform.get("/function/scaled-async").text == "async"
    shown = platform.ok("fn", "get", "--name", "scaled-sync").out
    assert "Instances:     1 current, 1 desired (0 busy, 0 starting, 0 queued)" in shown, shown
    assert "Concurrency:   1 (default: 1, async def: 100)" in shown, shown
    # The default concurrency of an async def function, learnt when it loaded.
    shown = platform.ok("fn", "get", "--name", "scaled-async").out
    assert "Concurrency:   100 (default: 1, async def: 100)" in shown, shown
    status = platform.json_of("fn", "get", "--name", "scaled-async")["status"]
    assert (status["desired"], status["concurrency"], status["panic"]) == (1, 100, False)


def test_large_and_binary_bodies(platform: Platform, tmp_path: Path) -> None:
    write(
        tmp_path / "mirror.py",
        """
        def main(request):
            if request.query.get("big"):
                return b"z" * (5 * 1024 * 1024)
            return bytes(reversed(request.body))
        """,
    )
    platform.ok("fn", "create", "--name", "mirror", "--code", str(tmp_path / "mirror.py"))
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    response = platform.request("POST", "/function/mirror", content=data)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == data[::-1]

    response = platform.get("/function/mirror?big=1")
    assert response.status_code == 200
    assert response.content == b"z" * (5 * 1024 * 1024)


def test_delete_flow(platform: Platform, tmp_path: Path) -> None:
    write(tmp_path / "doomed.py", "def main():\n    print('old-life')\n    return 'doomed'\n")
    platform.ok("fn", "create", "--name", "doomed", "--code", str(tmp_path / "doomed.py"))
    platform.ok(
        "route", "create", "--name", "doomed-route", "--function", "doomed", "--url", "/doomed"
    )
    assert platform.get("/doomed").text == "doomed"
    [package] = [p["name"] for p in platform.json_of("pkg", "list") if p["owner"] == "doomed"]
    wait_for(
        lambda: "old-life" in platform.ok("fn", "logs", "--name", "doomed").out, 5, "the log line"
    )

    in_use = platform.cli("fn", "delete", "--name", "doomed")
    assert_one_line_error(in_use, "in use", "doomed-route")
    assert platform.get("/doomed").text == "doomed"

    platform.ok("route", "delete", "--name", "doomed-route")
    deleted = platform.ok("fn", "delete", "--name", "doomed")
    assert "doomed" in deleted.out
    assert platform.get("/doomed").status_code == 404
    assert error_of(platform.get("/function/doomed"))["code"] == "function_not_found"
    assert_one_line_error(platform.cli("fn", "get", "--name", "doomed"), "not found")
    # Its own package went with it.
    assert package not in [p["name"] for p in platform.json_of("pkg", "list")]

    # The name can be used again, with a fresh log.
    write(tmp_path / "reborn.py", "def main(): return 'reborn'\n")
    platform.ok("fn", "create", "--name", "doomed", "--code", str(tmp_path / "reborn.py"))
    assert platform.get("/function/doomed").text == "reborn"
    assert "old-life" not in platform.ok("fn", "logs", "--name", "doomed").out


def test_custom_environment(platform: Platform, tmp_path: Path) -> None:
    platform.ok(
        "env", "create", "--name", "py-extra", "--poolsize", "1", "--preload", "decimal,json"
    )
    write(
        tmp_path / "onextra.py",
        """
        import sys

        def main(request):
            return {"decimal_preloaded": "decimal" in sys.modules}
        """,
    )
    platform.ok(
        "fn",
        "create",
        "--name",
        "on-extra",
        "--env",
        "py-extra",
        "--code",
        str(tmp_path / "onextra.py"),
    )
    response = platform.get("/function/on-extra")
    assert response.status_code == 200, response.text
    assert response.json() == {"decimal_preloaded": True}
    zygotes = [p for p in platform.children() if p.comm == "fz-py-extra"]
    assert len(zygotes) == 1, platform.children()

    in_use = platform.cli("env", "delete", "--name", "py-extra")
    assert_one_line_error(in_use, "in use", "on-extra")

    platform.ok("fn", "delete", "--name", "on-extra")
    platform.ok("env", "delete", "--name", "py-extra")
    wait_for(lambda: not is_alive(zygotes[0]), 5, "the deleted environment's zygote to exit")
    assert not [p for p in platform.children() if p.comm == "fz-py-extra"]


def test_module_shadowed_by_the_environment(platform: Platform, tmp_path: Path) -> None:
    write(tmp_path / "json.py", "def main(request):\n    return 'shadow'\n")
    platform.ok("fn", "create", "--name", "shadowed", "--code", str(tmp_path / "json.py"))
    response = platform.get("/function/shadowed")
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "load_failed"
    assert "rename your module" in error["message"]


def test_invalid_function_name(platform: Platform, tmp_path: Path) -> None:
    source = write(tmp_path / "x.py", "def main(): return 1\n")
    result = platform.cli("fn", "create", "--name", "Bad_Name", "--code", str(source))
    assert_one_line_error(result, "name")
    assert "Bad_Name" not in platform.ok("fn", "list").out


def test_invalid_function_name_error_names_the_function(platform: Platform, tmp_path: Path) -> None:
    source = write(tmp_path / "x.py", "def main(): return 1\n")
    result = platform.cli("fn", "create", "--name", "Bad_Name", "--code", str(source))
    assert_one_line_error(result, "Bad_Name")
    assert "owner" not in result.err
