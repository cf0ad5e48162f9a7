"""System: the sloppy converter and its careful neighbour on a throw-away ``fissile up``, the
package built by fissile's builder (Pillow from requirements.txt). Only the bad request fails,
with the answer its caller sees; the neighbour never blinks; inputs that kill the converter's
instance do not stop the next good JPEG (no crash-loop back-off for deaths while serving)."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import httpx
import pytest
from jpegkit import bomb, jpeg

from fissile.testing import Platform

pytestmark = pytest.mark.slow  # a platform, a Pillow build and a few instances: ~15 s

if os.geteuid() != 0 and os.environ.get("CI", "").lower() != "true":
    pytest.skip(
        "the memory limit that kills the converter needs cgroups (root)", allow_module_level=True
    )


def test_only_the_bad_request_fails(fissile_platform: Platform) -> None:
    good = fissile_platform.post("/jpeg2pdf", content=jpeg())
    assert (good.status_code, good.headers["content-type"]) == (200, "application/pdf")
    assert good.content.startswith(b"%PDF-")

    garbage = fissile_platform.post("/jpeg2pdf", content=b"this is not a jpeg")
    assert garbage.status_code == 500
    error = garbage.json()["error"]
    assert (error["code"], error["type"]) == ("function_error", "UnidentifiedImageError")
    assert error["message"].startswith("cannot identify image file")

    killer = fissile_platform.post("/jpeg2pdf", content=bomb())
    assert killer.status_code == 502
    assert killer.json() == {
        "error": {
            "code": "instance_died",
            "message": "the instance of jpeg2pdf died: out of memory (limit 128Mi)",
        }
    }
    assert fissile_platform.post("/jpeg2pdf", content=jpeg()).status_code == 200


def test_three_killers_in_a_row_then_a_good_jpeg_is_served(fissile_platform: Platform) -> None:
    before = fissile_platform.cli("fn", "get", "--name", "jpeg2pdf", "-o", "json").out
    restarts = _status(before)["restarts"]
    for _ in range(3):
        killed = fissile_platform.post("/jpeg2pdf", content=bomb())
        assert killed.status_code == 502, killed.text
    good = fissile_platform.post("/jpeg2pdf", content=jpeg())
    assert good.status_code == 200, good.text  # not 503 crash_loop
    status = _status(fissile_platform.cli("fn", "get", "--name", "jpeg2pdf", "-o", "json").out)
    assert status["restarts"] == restarts + 3
    assert (status["failures_in_a_row"], status["backoff"]) == (0, 0)
    assert "out of memory" in status["last_exit_reason"]
    metrics = fissile_platform.api("GET", "/metrics").text
    assert 'fissile_function_crashes_total{function="jpeg2pdf",reason="oom"}' in metrics


def test_the_neighbour_never_blinks(fissile_platform: Platform) -> None:
    answers: list[int] = []
    stop = threading.Event()

    def ask() -> None:
        with httpx.Client(base_url=fissile_platform.router_url, timeout=30.0) as client:
            while not stop.is_set():
                answers.append(client.post("/jpeginfo", content=jpeg(800, 600)).status_code)

    neighbour = threading.Thread(target=ask)
    neighbour.start()
    try:
        for _ in range(3):
            assert fissile_platform.post("/jpeg2pdf", content=bomb()).status_code == 502
        fissile_platform.wait_for(lambda: len(answers) >= 5, what="the neighbour's answers")
    finally:
        stop.set()
        neighbour.join()
    assert set(answers) == {200}, answers
    # And the careful one answers the converter's killer with a 413, alive.
    refused = fissile_platform.post("/jpeginfo", content=bomb())
    assert refused.status_code == 413
    assert "too large to be a photo" in refused.json()["error"]


def _status(out: str) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(out)["status"]
    return status


def test_a_storm_of_killers_is_said_but_good_requests_are_still_served(
    fissile_platform: Platform,
) -> None:
    # Ten deaths while serving within a minute (with the ones above, or these alone) are a
    # crash storm: the function's log says so and /metrics counts it; nothing is refused.
    for _ in range(10):
        assert fissile_platform.post("/jpeg2pdf", content=bomb()).status_code == 502
    assert fissile_platform.post("/jpeg2pdf", content=jpeg()).status_code == 200
    fissile_platform.wait_for(
        lambda: (
            "crash storm: 10 instances died while serving within"
            in fissile_platform.logs("jpeg2pdf")
        ),
        timeout=30,
        what="the crash storm in the function's log",
    )
    metrics = fissile_platform.api("GET", "/metrics").text
    assert 'fissile_function_crash_storms_total{function="jpeg2pdf"} 1.0' in metrics
    assert 'fissile_function_crash_storms_total{function="jpeginfo"} 0.0' in metrics
