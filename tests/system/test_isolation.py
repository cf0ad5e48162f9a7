"""Hostile functions against a fully sandboxed platform (``--sandbox strict``).

One hostile function per case; for each: the status code and error body, a well-behaved
neighbour answering correctly throughout, and the host untouched (no process left behind, no file
written outside the instance's tmp). Needs root on Linux (this project's test machines); skips
with the reason elsewhere, but never under CI=true.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from syskit import Neighbour, Platform, error_of, process_table, write

pytestmark = pytest.mark.slow  # one dedicated platform and ~20 instances: about 20 s

if os.geteuid() != 0 and os.environ.get("CI") != "true":
    pytest.skip("isolation needs root (namespaces, cgroups)", allow_module_level=True)


HOSTILE = {
    "segfault": """
        import ctypes
        def main(request):
            ctypes.string_at(0)
    """,
    "osexit": """
        import os
        def main(request):
            os._exit(3)
    """,
    "sysexit": """
        import sys
        def main(request):
            sys.exit(4)
    """,
    "raiser": """
        def main(request):
            raise RuntimeError("sloppy exception handling")
    """,
    "spinner": """
        def main(request):
            while True:
                pass
    """,
    "membomb": """
        def main(request):
            hog = []
            while True:
                hog.append(bytearray(8 * 1024 * 1024))
    """,
    "forkbomb": """
        import os, time
        def main(request):
            forked = 0
            try:
                while True:
                    if os.fork() == 0:
                        time.sleep(600)
                        os._exit(0)
                    forked += 1
            except OSError as exc:
                return {"forked": forked, "error": exc.strerror}, 500
    """,
    "diskfill": """
        def main(request):
            with open("/tmp/fill", "wb") as out:
                while True:
                    out.write(b"x" * (1 << 20))
    """,
    "closer": """
        import os, socket, stat
        def main(request):
            for fd in os.listdir("/proc/self/fd"):
                try:
                    if stat.S_ISSOCK(os.fstat(int(fd)).st_mode):
                        sock = socket.socket(fileno=int(fd))
                        sock.shutdown(socket.SHUT_RDWR)
                        sock.detach()
                except OSError:
                    pass
            return "never delivered"
    """,
}

# status, error code, and a phrase of the message
EXPECTED = {
    "segfault": (502, "instance_died", "killed by signal 11"),
    "osexit": (502, "instance_died", "exited with status 3"),
    "sysexit": (502, "instance_died", "exited with status 4"),
    "raiser": (500, "function_error", "sloppy exception handling"),
    "spinner": (504, "timeout", "did not answer within 2s"),
    "membomb": (502, "instance_died", "out of memory (limit 64Mi)"),
    "diskfill": (500, "function_error", "No space left on device"),
    "closer": (502, "instance_died", "closed the connection mid-response"),
}

SPY = """
    import ctypes, json, os, socket, sys
    def main(request):
        targets = json.loads(request.body)
        found = {}
        for name, path in targets.items():
            try:
                with open(path, "rb") as handle:
                    handle.read(1)
                found[name] = "readable"
            except OSError as exc:
                found[name] = exc.strerror
        libc = ctypes.CDLL(None, use_errno=True)
        found["mount"] = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) == 0
        found["unshare"] = libc.unshare(0x00020000) == 0
        found["uid"] = os.getuid()
        found["processes"] = sorted(p for p in os.listdir("/proc") if p.isdigit())
        found["token_in_env"] = any("TOKEN" in key for key in os.environ)
        try:
            open("/usr/lib/fissile-was-here", "w")
            found["write_usr"] = "written"
        except OSError as exc:
            found["write_usr"] = exc.strerror
        return found
"""

NEIGHBOUR = """
    def main(request):
        return {"ok": True}
"""


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = Platform(tmp_path_factory.mktemp("isolation") / "data", ("--sandbox", "strict"))
    platform.start()
    code = tmp_path_factory.mktemp("hostile-code")
    commands: list[tuple[str, ...]] = []
    for name, source in {**HOSTILE, "spy": SPY, "neighbour": NEIGHBOUR}.items():
        path = write(code / f"{name}.py", source)
        extra = {
            "spinner": ("--timeout", "2s"),
            "membomb": ("--memory", "64Mi"),
            # Room for 255 forked copies, so the process limit, not memory, stops the bomb.
            "forkbomb": ("--memory", "2Gi"),
        }.get(name, ())
        commands.append(("fn", "create", "--name", name, "--code", str(path), *extra))
    platform.ok_many(*commands)
    platform.ok("fn", "create", "--name", "offline", "--code", str(code / "spy.py"))
    platform.ok("fn", "update", "--name", "offline", "--network", "none")
    yield platform
    try:
        platform.stop_cleanly()
    finally:
        platform.abandon()


def _host_snapshot() -> set[int]:
    return set(process_table())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_function_is_contained(sandboxed: Platform, name: str) -> None:
    status, code, phrase = EXPECTED[name]
    with Neighbour(sandboxed):
        response = sandboxed.get(f"/function/{name}", timeout=30.0)
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["code"] == code, error
    assert phrase in json.dumps(error), error


def test_crashes_show_in_fn_get(sandboxed: Platform) -> None:
    sandboxed.get("/function/segfault", timeout=30.0)
    function = sandboxed.json_of("fn", "get", "--name", "segfault")
    assert function["status"]["restarts"] >= 1
    assert "killed by signal 11" in function["status"]["last_exit_reason"]
    assert function["status"]["last_crash_at"]


def test_dying_while_serving_is_replaced_without_back_off(sandboxed: Platform) -> None:
    # Each call kills the instance that serves it; the next one gets a new instance at once
    # (never 503 crash_loop): back-off is for functions that cannot start.
    for _ in range(6):
        response = sandboxed.get("/function/osexit", timeout=30.0)
        assert response.status_code == 502, response.text
        assert error_of(response)["code"] == "instance_died"
    status = sandboxed.json_of("fn", "get", "--name", "osexit")["status"]
    assert status["failures_in_a_row"] == 0
    assert status["backoff"] == 0
    assert status["restarts"] >= 6


def test_fork_bomb_hits_the_process_limit(sandboxed: Platform) -> None:
    before = len(process_table())
    with Neighbour(sandboxed):
        response = sandboxed.get("/function/forkbomb", timeout=30.0)
    assert response.status_code == 500, response.text
    body = response.json()
    assert body["error"] == "Resource temporarily unavailable", body
    assert 100 < body["forked"] < 256, body
    # Deleting the function ends the instance's PID namespace: every forked child goes too.
    sandboxed.ok("fn", "delete", "--name", "forkbomb")
    deadline = time.monotonic() + 10
    while len(process_table()) > before + 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(process_table()) <= before + 20, "fork-bomb children outlived their instance"


def test_disk_filling_stays_in_the_instance_tmp(sandboxed: Platform) -> None:
    sandboxed.get("/function/diskfill", timeout=30.0)
    assert not Path("/tmp/fill").exists()
    assert not list(sandboxed.data_dir.rglob("fill"))


def test_function_cannot_read_state_token_or_other_packages(sandboxed: Platform) -> None:
    deploy = sandboxed.data_dir / "deploy"
    others = [p for p in deploy.iterdir() if (p / "neighbour.py").exists()]
    assert others, "the neighbour's deploy directory should exist on the host"
    targets = {
        "database": str(sandboxed.data_dir / "fissile.db"),
        "token": str(sandboxed.data_dir / "api-token"),
        "other_package": str(others[0] / "neighbour.py"),
        "all_packages": f"/.deploy/{others[0].name}/neighbour.py",
    }
    found = sandboxed.request("POST", "/function/spy", json=targets, timeout=30.0).json()
    for name in targets:
        assert found[name] != "readable", (name, found)
    assert found["mount"] is False
    assert found["unshare"] is False
    assert found["uid"] >= 100000
    assert found["processes"] == ["1"]
    assert found["token_in_env"] is False
    assert found["write_usr"] == "Read-only file system"
    assert not Path("/usr/lib/fissile-was-here").exists()


def test_network_none_has_only_its_own_loopback(sandboxed: Platform) -> None:
    code = Path(sandboxed.data_dir.parent / "probe.py")
    write(
        code,
        f"""
        import socket
        def main(request):
            sock = socket.socket()
            sock.settimeout(2)
            try:
                sock.connect(("127.0.0.1", {sandboxed.api_port}))
                return "reached the control API"
            except OSError as exc:
                return exc.strerror
        """,
    )
    sandboxed.ok("fn", "create", "--name", "probe-none", "--code", str(code), "--network", "none")
    sandboxed.ok("fn", "create", "--name", "probe-host", "--code", str(code))
    assert sandboxed.get("/function/probe-none").text == "Connection refused"
    assert sandboxed.get("/function/probe-host").text == "reached the control API"


def test_control_api_needs_the_token(sandboxed: Platform) -> None:
    response = sandboxed.http.get(f"{sandboxed.api_url}/v1/functions")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    token = (sandboxed.data_dir / "api-token").read_text().strip()
    assert (sandboxed.data_dir / "api-token").stat().st_mode & 0o777 == 0o600
    authorized = sandboxed.http.get(
        f"{sandboxed.api_url}/v1/functions", headers={"authorization": f"Bearer {token}"}
    )
    assert authorized.status_code == 200


def test_doctor_reports_full_isolation(sandboxed: Platform) -> None:
    result = sandboxed.ok("doctor", "-o", "json")
    rows = {row["feature"]: row for row in json.loads(result.out)}
    assert all(row["supported"] == "yes" for row in rows.values()), rows
    assert all(row["active"] == "yes" for row in rows.values()), rows
