"""The platform's own life: restarts keep every resource, limits hold, and its children never
outlive it, even when it is killed outright. Each test here runs its own ``fissile up``."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from syskit import FISSILE, Platform, Spawn, error_of, spawned_by, wait_gone, write


def _specs(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Resources by name without their live status (instance counts change)."""
    return {item["name"]: {k: v for k, v in item.items() if k != "status"} for item in items}


def _populate(platform: Platform, work: Path, gate: int) -> None:
    write(work / "hello.py", 'def main(): return "Hello, world!"\n')
    write(
        work / "student.py",
        """
        import os

        def main(request):
            print("student-called", request.path)
            return {"id": request.params.get("id"), "path": request.path,
                    "secret": os.environ.get("SECRET")}
        """,
    )
    write(work / "pkgsrc" / "main.py", "def main(request):\n    return 'from a package'\n")
    platform.ok_many(
        ("fn", "create", "--name", "hello", "--env", "python", "--code", str(work / "hello.py")),
        (
            "fn", "create", "--name", "student", "--code", str(work / "student.py"),
            "--env-var", "SECRET=s3", "--timeout", "7s",
        ),
        ("env", "create", "--name", "py-small", "--poolsize", "1"),
    )  # fmt: skip
    platform.ok_many(
        ("route", "create", "--function", "hello", "--url", "/hello"),
        ("route", "create", "--function", "student", "--url", "/students/{id:[0-9]+}"),
        ("route", "create", "--function", "student", "--prefix", "/campus"),
        (
            "pkg", "create", "--name", "kept-pkg", "--env", "py-small",
            "--src", str(work / "pkgsrc"), "--wait",
        ),
    )  # fmt: skip
    platform.ok("fn", "create", "--name", "packaged", "--env", "py-small", "--pkg", "kept-pkg")
    # A build still running when the platform stops (it waits until the test's gate port, on
    # loopback, accepts connections: a sandboxed build sees no host file): resumed by the next
    # start.
    write(work / "slowsrc" / "main.py", "def main():\n    return 'built slowly'\n")
    knock = f"import socket; socket.create_connection(('127.0.0.1', {gate}), 1).close()"
    gated = (
        f'until python -c "{knock}" 2>/dev/null; do sleep 0.05; done;'
        ' cp -r "$SRC_PKG" "$DEPLOY_PKG"'
    )
    platform.ok(
        "pkg", "create", "--name", "slow-pkg", "--env", "python", "--src", str(work / "slowsrc"),
        "--buildcmd", gated,
    )  # fmt: skip
    platform.ok("fn", "create", "--name", "built-late", "--pkg", "slow-pkg")


def _answers(platform: Platform) -> dict[str, tuple[int, str]]:
    paths = ["/hello", "/students/12", "/students/ab", "/campus/a/b", "/function/packaged"]
    return {path: (r.status_code, r.text) for path in paths for r in [platform.get(path)]}


# Slow (about 7-10 s on a loaded machine): two platform starts, a build resumed across the
# restart, and a dozen CLI commands (each pays the CLI's ~0.25 s start-up).
@pytest.mark.slow
def test_restart_keeps_resources_and_routes(spawn: Spawn, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # Bound but not listening (connections are refused) until the gated build may finish.
    gate = socket.socket()
    gate.bind(("127.0.0.1", 0))
    first = spawn(data_dir)
    _populate(first, tmp_path, gate.getsockname()[1])
    before = {
        group: _specs(first.json_of(group, "list")) for group in ("fn", "pkg", "route", "env")
    }
    served = _answers(first)
    # The gated build is still running (its shell is one of the platform's processes); the
    # clean stop below checks that it does not outlive the platform.
    assert any(p.comm == "sh" for p in first.children()), first.children()
    assert served["/hello"] == (200, "Hello, world!")
    assert served["/students/12"][0] == 200 and '"secret": "s3"' in served["/students/12"][1]
    assert served["/students/ab"][0] == 404
    assert served["/campus/a/b"][0] == 200
    assert served["/function/packaged"] == (200, "from a package")
    first.stop_cleanly()

    second = spawn(data_dir)
    after = {
        group: _specs(second.json_of(group, "list")) for group in ("fn", "pkg", "route", "env")
    }
    # The resumed build updates its package's status (and so its record); nothing else changes.
    for snapshot in (before, after):
        for key in ("updated_at", "generation"):
            snapshot["pkg"]["slow-pkg"].pop(key)
    assert after == before
    assert _answers(second) == served
    listed = second.ok("fn", "list").out
    for name in ("hello", "student", "packaged"):
        assert name in listed
    # The interrupted build runs again; its function waits for it, then answers.
    assert second.json_of("pkg", "info", "--name", "slow-pkg")["status"]["state"] == "building"
    gate.listen()
    assert second.get("/function/built-late", timeout=60).text == "built slowly"
    gate.close()
    info = second.ok("pkg", "info", "--name", "slow-pkg").out
    assert "Status:   succeeded" in info, info
    # The function's log from before the restart is still there.
    log = second.ok("fn", "logs", "--name", "student").out
    assert "student-called /students/12" in log, log
    second.stop_cleanly()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(FISSILE), "up", "--data-dir", str(tmp_path / "data"), "--port", str(port),
             "--api-port", "0"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert f"cannot listen for the router on 127.0.0.1:{port}" in result.stderr, result.stderr
    assert "in use" in result.stderr


def test_second_platform_on_the_same_data_dir_is_refused(spawn: Spawn) -> None:
    first = spawn()
    # On the first one's own ports, which are certainly taken: the data dir is checked first,
    # so the answer names it whatever happens to the ports (no race for free ones).
    second = run_up(
        "--data-dir", str(first.data_dir), "--host", "127.0.0.1", "--port", str(first.port),
        "--api-host", "127.0.0.1", "--api-port", str(first.api_port),
    )  # fmt: skip
    assert (second.returncode, second.stdout) == (1, ""), second
    assert second.stderr == (
        f"Error: the data dir {first.data_dir} is in use by another fissile up (pid {first.pid})\n"
    ), second
    assert first.get("/_fissile/healthz").status_code == 200  # the first goes on serving
    first.stop_cleanly()


def run_up(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FISSILE), "up", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_functions_cannot_import_from_the_platforms_cwd(spawn: Spawn, tmp_path: Path) -> None:
    operator_dir = tmp_path / "operator"
    write(operator_dir / "operator_private.py", "SECRET = 'operator data'\n")
    platform = spawn(None, cwd=operator_dir)
    write(
        tmp_path / "snoop.py",
        """
        def main(request):
            try:
                import operator_private
            except ImportError:
                return "not importable"
            return operator_private.SECRET
        """,
    )
    platform.ok("fn", "create", "--name", "snoop", "--code", str(tmp_path / "snoop.py"))
    try:
        assert platform.get("/function/snoop").text == "not importable"
    finally:
        platform.stop_cleanly()


def test_body_limit(spawn: Spawn, tmp_path: Path) -> None:
    platform = spawn(None, "--max-body", "1Ki")
    write(tmp_path / "size.py", "def main(request):\n    return str(len(request.body))\n")
    platform.ok("fn", "create", "--name", "size", "--code", str(tmp_path / "size.py"))
    platform.ok("route", "create", "--function", "size", "--url", "/size", "--method", "POST")

    response = platform.request("POST", "/size", content=b"x" * 1024)
    assert (response.status_code, response.text) == (200, "1024")

    response = platform.request("POST", "/size", content=b"x" * 2048)
    assert response.status_code == 413
    assert error_of(response)["code"] == "body_too_large"

    # Without a content-length (chunked), the limit holds while reading.
    def chunks() -> Any:
        for _ in range(4):
            yield b"y" * 512

    response = platform.request("POST", "/function/size", content=chunks())
    assert response.status_code == 413
    # A declared content-length over the limit is refused from the headers alone, before the
    # body is sent.
    with socket.create_connection(("127.0.0.1", platform.port), timeout=10) as sock:
        sock.sendall(b"POST /size HTTP/1.1\r\nhost: x\r\ncontent-length: 104857600\r\n\r\n")
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head
    # And the platform still serves after refusing.
    assert platform.request("POST", "/size", content=b"ok").text == "2"
    platform.stop_cleanly()


def test_sigkill_leaves_no_children(spawn: Spawn, tmp_path: Path) -> None:
    platform = spawn()
    write(tmp_path / "warm.py", "def main(): return 'warm'\n")
    platform.ok("fn", "create", "--name", "warm", "--code", str(tmp_path / "warm.py"))
    platform.ok(
        "fn",
        "create",
        "--name",
        "kept-warm",
        "--code",
        str(tmp_path / "warm.py"),
        "--min-scale",
        "2",
    )
    assert platform.get("/function/warm").text == "warm"
    deadline = time.monotonic() + 10
    while platform.json_of("fn", "get", "--name", "kept-warm")["status"]["instances"] < 2:
        assert time.monotonic() < deadline, "min-scale instances never started"
        time.sleep(0.05)

    children = platform.children()
    names = sorted(p.comm for p in children)
    assert any(n.startswith("fz-") for n in names), names
    assert sum(n.startswith("fi-") for n in names) >= 3, names  # warm + 2 kept warm (+ pool)
    pid = platform.pid

    started = time.monotonic()
    platform.stop(signal.SIGKILL)
    survivors = wait_gone(children, timeout=3.0)
    assert not survivors, (
        f"still alive {time.monotonic() - started:.1f}s after SIGKILL: {survivors}"
    )
    assert not spawned_by(pid)


def _sigterm_during_slow_request(spawn: Spawn, tmp_path: Path) -> tuple[Platform, list[Any]]:
    """SIGTERM a platform while a 6 s request is in flight; returns what the client got."""
    platform = spawn()
    write(
        tmp_path / "slow.py", "import time\n\ndef main():\n    time.sleep(6)\n    return 'done'\n"
    )
    platform.ok("fn", "create", "--name", "slow", "--code", str(tmp_path / "slow.py"))
    got: list[Any] = []

    def call() -> None:
        try:
            response = httpx.get(f"{platform.router_url}/function/slow", timeout=30)
            got.append((response.status_code, response.text))
        except httpx.HTTPError as exc:
            got.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 10
    while platform.json_of("fn", "get", "--name", "slow")["status"]["busy"] < 1:
        assert time.monotonic() < deadline, "the request never reached an instance"
        time.sleep(0.05)
    started = time.monotonic()
    platform.stop_cleanly()  # exit status 0, no zygote or instance left
    assert time.monotonic() - started < 10
    caller.join(30)
    assert not caller.is_alive(), "the in-flight request hung after the platform stopped"
    assert "Traceback" not in platform.stderr(), platform.stderr()
    return platform, got


def test_sigterm_with_request_in_flight_stops_cleanly(spawn: Spawn, tmp_path: Path) -> None:
    _, got = _sigterm_during_slow_request(spawn, tmp_path)
    # The client is answered either way (the function's body, or the router's JSON error).
    [outcome] = got
    assert isinstance(outcome, tuple), outcome
    status, text = outcome
    assert status == 200 or json.loads(text)["error"]["code"], outcome


def test_sigterm_drains_in_flight_requests(spawn: Spawn, tmp_path: Path) -> None:
    _, got = _sigterm_during_slow_request(spawn, tmp_path)
    assert got == [(200, "done")]
