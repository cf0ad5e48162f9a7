"""Overload is not a crash (a real ``fissile up``): more calls than a function can serve get
200, 429 (queue full) or 503 (waited past the queue timeout), never 504, and kill nothing; a
function that overruns its timeout gets 504 and loses only the instance that overran, however
often, without crash-loop back-off; a function that dies at start still backs off."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from syskit import Platform, error_of, write

DEADLINE = 90.0  # generous: two cores shared with other work

SLEEPER = """
import time

def main(request):
    time.sleep(float(request.query.get("sleep", "1")))
    return "slept"
"""


def eventually(condition: Callable[[], Any], timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:g}s")
        time.sleep(0.1)


def status_of(platform: Platform, name: str) -> dict[str, Any]:
    """The function's live status from the control API (polled: the CLI's start-up is slow)."""
    token = (platform.data_dir / "api-token").read_text().strip()
    response = platform.http.get(
        f"{platform.api_url}/v1/functions/{name}", headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["status"]
    return result


def ready_pids(platform: Platform, name: str, count: int) -> set[int]:
    """The function's instance pids, once it has ``count`` ready ones."""
    status = eventually(
        lambda: (s := status_of(platform, name))["instances"] == count and not s["starting"] and s
    )
    return set(status["pids"])


def deploy(platform: Platform, tmp: Path, name: str, code: str, *options: str) -> None:
    source = write(tmp / f"{name.replace('-', '_')}.py", code)
    platform.ok("fn", "create", "--name", name, "--code", str(source), *options)


async def burst(url: str, calls: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=calls, max_keepalive_connections=calls)
    async with httpx.AsyncClient(limits=limits, timeout=DEADLINE) as client:
        return await asyncio.gather(*(client.get(url) for _ in range(calls)))


def test_overload_is_answered_429_or_503_and_kills_nothing(
    platform: Platform, tmp_path: Path
) -> None:
    # The case: 100 concurrent calls to a 1 s function, timeout 5 s, max scale 5 (kept
    # warm, so its pids can be compared), queue limit 10 x 5 x 1 = 50 by default.
    deploy(
        platform,
        tmp_path,
        "ovl-sleep",
        SLEEPER,
        "--timeout",
        "5s",
        "--max-scale",
        "5",
        "--min-scale",
        "5",
        "--queue-timeout",
        "2s",
    )
    pids = ready_pids(platform, "ovl-sleep", 5)
    assert platform.get("/function/ovl-sleep?sleep=0", timeout=DEADLINE).status_code == 200

    started = time.monotonic()
    responses = asyncio.run(burst(f"{platform.router_url}/function/ovl-sleep", 100))
    took = time.monotonic() - started

    codes = Counter(r.status_code for r in responses)
    assert set(codes) <= {200, 429, 503}, codes
    # 5 at once, the queue's 50 at 5 a second for 2 s, the other ~45 refused outright.
    assert codes[200] >= 5 and codes[429] >= 1 and codes[503] >= 1, codes
    assert took < 30, took  # nobody waited for the 5 s timeout, let alone a back-off
    for response in responses:
        if response.status_code != 200:
            assert int(response.headers["retry-after"]) >= 1
            expected = "overloaded" if response.status_code == 429 else "queue_timeout"
            assert error_of(response)["code"] == expected

    status = platform.json_of("fn", "get", "--name", "ovl-sleep")["status"]
    assert set(status["pids"]) == pids  # no instance was killed for the queue's sake
    assert (status["restarts"], status["failures_in_a_row"], status["backoff"]) == (0, 0, 0)
    assert status["timeouts"] == 0
    assert (status["rejected"], status["queue_timeouts"]) == (codes[429], codes[503])
    table = platform.ok("fn", "get", "--name", "ovl-sleep").out
    assert "Back-off:      -" in table, table
    overload = f"{codes[429]} refused (429), {codes[503]} waited too long (503), 0 timed out (504)"
    assert overload in table, table
    # And it serves normally right afterwards.
    assert platform.get("/function/ovl-sleep?sleep=0", timeout=DEADLINE).status_code == 200
    assert set(status_of(platform, "ovl-sleep")["pids"]) == pids


def test_overrunning_the_timeout_is_a_504_killing_only_that_instance(
    platform: Platform, tmp_path: Path
) -> None:
    deploy(
        platform,
        tmp_path,
        "ovl-overrun",
        SLEEPER,
        "--timeout",
        "2s",
        "--min-scale",
        "2",
        "--max-scale",
        "2",
    )
    before = ready_pids(platform, "ovl-overrun", 2)

    # One call overruns while another is served by the other instance.
    slow: list[httpx.Response] = []
    caller = threading.Thread(
        target=lambda: slow.append(platform.get("/function/ovl-overrun?sleep=30", timeout=DEADLINE))
    )
    caller.start()
    eventually(lambda: status_of(platform, "ovl-overrun")["busy"] == 1 or slow)
    assert not slow, "the slow call ended before it was seen running"
    fast = platform.get("/function/ovl-overrun?sleep=0", timeout=DEADLINE)
    caller.join(DEADLINE)
    assert fast.status_code == 200
    (overran,) = slow
    assert overran.status_code == 504
    assert error_of(overran) == {
        "code": "timeout",
        "message": "function ovl-overrun did not answer within 2s; its instance was killed",
    }
    after = ready_pids(platform, "ovl-overrun", 2)
    assert len(before & after) == 1, (before, after)  # only the instance that overran

    # More timeouts in a row than the crash-loop threshold (3): no back-off.
    for _ in range(3):
        response = platform.get("/function/ovl-overrun?sleep=30", timeout=DEADLINE)
        assert response.status_code == 504, response.text
        ready_pids(platform, "ovl-overrun", 2)
    status = platform.json_of("fn", "get", "--name", "ovl-overrun")["status"]
    assert status["timeouts"] == 4
    assert (status["restarts"], status["failures_in_a_row"], status["backoff"]) == (0, 0, 0)
    assert status["last_exit_reason"] == "timeout after 2s"
    assert platform.get("/function/ovl-overrun?sleep=0", timeout=DEADLINE).status_code == 200


def test_dying_at_start_still_backs_off(platform: Platform, tmp_path: Path) -> None:
    deploy(platform, tmp_path, "ovl-crash", "import os\nos._exit(3)\n\ndef main():\n    pass\n")
    codes = []
    refused = None
    for _ in range(8):
        response = platform.get("/function/ovl-crash", timeout=DEADLINE)
        codes.append(response.status_code)
        if response.status_code == 503:
            refused = response
            break
    assert refused is not None, codes
    assert error_of(refused)["code"] == "crash_loop"
    assert int(refused.headers["retry-after"]) >= 1
    status = status_of(platform, "ovl-crash")
    assert status["failures_in_a_row"] >= 3
    assert status["timeouts"] == 0
