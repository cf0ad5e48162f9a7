"""Updates roll a function's instances: new code and settings are served, in-flight requests
finish on the old code."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
from syskit import Platform, write

VERSIONED = """
import time

def main(request):
    time.sleep(float(request.query.get("sleep", "0")))
    return "{version}"
"""


def owned_packages(platform: Platform, function: str) -> list[str]:
    return [p["name"] for p in platform.json_of("pkg", "list") if p.get("owner") == function]


def test_update_code_serves_new_body(platform: Platform, tmp_path: Path) -> None:
    write(tmp_path / "greeter.py", VERSIONED.format(version="v1"))
    write(tmp_path / "greeter2.py", VERSIONED.format(version="v2"))
    platform.ok("fn", "create", "--name", "greeter", "--code", str(tmp_path / "greeter.py"))
    platform.ok("route", "create", "--function", "greeter", "--url", "/greeter")
    assert platform.get("/greeter").text == "v1"
    [first_package] = owned_packages(platform, "greeter")

    platform.ok("fn", "update", "--name", "greeter", "--code", str(tmp_path / "greeter2.py"))
    for _ in range(5):
        response = platform.get("/greeter")
        assert response.status_code == 200
        assert response.text == "v2"
    # The function's old package was replaced, not left behind.
    [second_package] = owned_packages(platform, "greeter")
    assert second_package != first_package


def test_in_flight_request_finishes_on_old_code(platform: Platform, tmp_path: Path) -> None:
    write(tmp_path / "slowv1.py", VERSIONED.format(version="old"))
    write(tmp_path / "slowv2.py", VERSIONED.format(version="new"))
    platform.ok("fn", "create", "--name", "rolling", "--code", str(tmp_path / "slowv1.py"))
    assert platform.get("/function/rolling").text == "old"

    results: list[httpx.Response] = []

    def slow_call() -> None:
        with httpx.Client(timeout=30) as client:
            results.append(client.get(f"{platform.router_url}/function/rolling?sleep=2"))

    caller = threading.Thread(target=slow_call)
    caller.start()
    deadline = time.monotonic() + 5
    while platform.json_of("fn", "get", "--name", "rolling")["status"]["busy"] < 1:
        assert time.monotonic() < deadline, "the slow request never reached an instance"
        time.sleep(0.05)

    platform.ok("fn", "update", "--name", "rolling", "--code", str(tmp_path / "slowv2.py"))
    assert platform.get("/function/rolling").text == "new"
    caller.join(30)
    assert not caller.is_alive()
    assert [(r.status_code, r.text) for r in results] == [(200, "old")]


def test_update_env_var_is_visible(platform: Platform, tmp_path: Path) -> None:
    write(
        tmp_path / "envreader.py",
        """
        import os

        def main(request):
            return {"K": os.environ.get("K"), "OTHER": os.environ.get("OTHER")}
        """,
    )
    platform.ok(
        "fn", "create", "--name", "envreader", "--code", str(tmp_path / "envreader.py"),
        "--env-var", "OTHER=x",
    )  # fmt: skip
    assert platform.get("/function/envreader").json() == {"K": None, "OTHER": "x"}

    platform.ok("fn", "update", "--name", "envreader", "--env-var", "K=V", "--env-var", "OTHER=y")
    assert platform.get("/function/envreader").json() == {"K": "V", "OTHER": "y"}
    shown = platform.ok("fn", "get", "--name", "envreader").out
    assert "K=V" in shown

    platform.ok("fn", "update", "--name", "envreader", "--env-var", "K=with=equals sign")
    assert platform.get("/function/envreader").json()["K"] == "with=equals sign"


def test_update_timeout_applies(platform: Platform, tmp_path: Path) -> None:
    write(tmp_path / "napper.py", VERSIONED.format(version="rested"))
    platform.ok("fn", "create", "--name", "napper", "--code", str(tmp_path / "napper.py"))
    assert platform.get("/function/napper?sleep=0.7").text == "rested"

    platform.ok("fn", "update", "--name", "napper", "--timeout", "500ms")
    assert platform.json_of("fn", "get", "--name", "napper")["timeout"] == 0.5
    started = time.monotonic()
    response = platform.get("/function/napper?sleep=3")
    assert response.status_code == 504, response.text
    assert time.monotonic() - started < 2.5  # cut short, not waited out
    assert platform.get("/function/napper").text == "rested"


def test_pkg_update_rolls_functions_on_it(platform: Platform, tmp_path: Path) -> None:
    v1 = write(tmp_path / "v1" / "main.py", VERSIONED.format(version="pkg-v1")).parent
    v2 = write(tmp_path / "v2" / "main.py", VERSIONED.format(version="pkg-v2")).parent
    platform.ok(
        "pkg", "create", "--name", "shared-pkg", "--env", "python", "--src", str(v1), "--wait"
    )
    platform.ok("fn", "create", "--name", "on-shared-a", "--pkg", "shared-pkg")
    platform.ok("fn", "create", "--name", "on-shared-b", "--pkg", "shared-pkg")
    assert platform.get("/function/on-shared-a").text == "pkg-v1"
    assert platform.get("/function/on-shared-b").text == "pkg-v1"

    platform.ok("pkg", "update", "--name", "shared-pkg", "--src", str(v2), "--wait")
    assert platform.get("/function/on-shared-a").text == "pkg-v2"
    assert platform.get("/function/on-shared-b").text == "pkg-v2"


def test_failed_update_keeps_the_old_code_serving(platform: Platform, tmp_path: Path) -> None:
    write(tmp_path / "good.py", VERSIONED.format(version="good"))
    platform.ok("fn", "create", "--name", "resilient", "--code", str(tmp_path / "good.py"))
    assert platform.get("/function/resilient").text == "good"
    packages_before = owned_packages(platform, "resilient")

    broken = tmp_path / "broken"
    write(broken / "main.py", VERSIONED.format(version="broken"))
    write(broken / "requirements.txt", "./not-there\n")
    result = platform.cli("fn", "update", "--name", "resilient", "--src", str(broken))
    assert result.rc == 1, result
    assert "not-there" in result.err
    assert platform.get("/function/resilient").text == "good"
    assert owned_packages(platform, "resilient") == packages_before


def test_failed_package_rebuild_keeps_the_last_good_build(
    platform: Platform, tmp_path: Path
) -> None:
    good = write(tmp_path / "good" / "main.py", VERSIONED.format(version="last-good")).parent
    bad = write(tmp_path / "bad" / "main.py", VERSIONED.format(version="never")).parent
    platform.ok(
        "pkg", "create", "--name", "flaky-pkg", "--env", "python", "--src", str(good), "--wait"
    )
    platform.ok("fn", "create", "--name", "on-flaky", "--pkg", "flaky-pkg")
    assert platform.get("/function/on-flaky").text == "last-good"

    result = platform.cli(
        "pkg", "update", "--name", "flaky-pkg", "--src", str(bad), "--buildcmd", "exit 3", "--wait"
    )
    assert result.rc == 1, result
    assert "Status:   failed" in platform.ok("pkg", "info", "--name", "flaky-pkg").out
    assert platform.get("/function/on-flaky").text == "last-good"
    # New instances (here: after a roll) still start from the last good build.
    platform.ok("fn", "update", "--name", "on-flaky", "--env-var", "ROLLED=1")
    assert platform.get("/function/on-flaky").text == "last-good"
