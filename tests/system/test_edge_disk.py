"""A full disk under the data dir: every write path answers 507 naming the data dir, deletes
still work, the platform keeps serving what exists, and accepted asynchronous invocations finish
once space returns, without a restart.

The data dir is a small tmpfs mounted by the test (root only; skipped with the reason
elsewhere, but not under CI=true) and filled by a file the test writes until ENOSPC. Slow
(~10 s): a platform of its own, and asynchronous calls of 0.5 s run one at a time across the
full period.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from syskit import Platform, Spawn, assert_one_line_error, write

pytestmark = [
    pytest.mark.slow,
    # CI runs as root: there a failing mount fails the test rather than skipping it.
    pytest.mark.skipif(
        os.geteuid() != 0 and os.environ.get("CI") != "true",
        reason="mounting a small filesystem for the data dir needs root",
    ),
]

DISK = "24m"
FINAL = {"succeeded", "failed", "timed_out", "cancelled", "dead"}

SLEEPY = """
import time

def main(request):
    time.sleep(float(request.query.get("s", "0")))
    return {"slept": request.query.get("s", "0")}
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A data dir that is its own tmpfs of a few MiB, unmounted afterwards."""
    mountpoint = tmp_path / "data"
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK},mode=0700", "tmpfs", str(mountpoint)],
        check=True,
    )
    try:
        yield mountpoint
    finally:
        # Lazily: a process of the platform that outlived a failed test must not wedge it.
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the filesystem is full; returns it (delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    assert os.statvfs(disk).f_bavail == 0
    return filler


def control(platform: Platform, method: str, path: str, **kwargs: Any) -> httpx.Response:
    token = (platform.data_dir / "api-token").read_text().strip()
    headers = {"authorization": f"Bearer {token}"}
    return platform.http.request(method, platform.api_url + path, headers=headers, **kwargs)


def assert_full(response: httpx.Response, data_dir: Path) -> None:
    assert response.status_code == 507, response.text
    error = response.json()["error"]
    assert error["code"] == "storage_full", error
    assert str(data_dir) in error["message"], error


def status_of(platform: Platform, invocation_id: str) -> str:
    response = platform.get(f"/invocations/{invocation_id}")
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


def test_full_disk_answers_507_keeps_serving_and_recovers(
    spawn: Spawn, small_disk: Path, tmp_path: Path
) -> None:
    platform = spawn(small_disk)
    code = write(tmp_path / "src" / "sleepy.py", SLEEPY)
    platform.ok_many(
        ("fn", "create", "--name", "kept", "--code", str(code), "--min-scale", "1"),
        ("fn", "create", "--name", "doomed", "--code", str(code)),
    )
    platform.ok("fn", "create", "--name", "queue", "--code", str(code), "--max-scale", "1")
    assert platform.get("/function/kept").status_code == 200

    # Accepted work, most of it still queued behind one instance when the disk fills.
    accepted = []
    for _ in range(6):
        response = platform.request("POST", "/async-function/queue?s=0.5")
        assert response.status_code == 202, response.text
        accepted.append(response.json()["id"])

    filler = fill(small_disk)

    # Every write path: 507 with a JSON error naming the data dir.
    package = control(platform, "GET", "/v1/functions/kept").json()["package"]
    source = control(platform, "GET", f"/v1/packages/{package}").json()["source"]
    function = {"name": "late", "env": "python", "package": package}
    assert_full(control(platform, "POST", "/v1/functions", json=function), small_disk)
    pkg = {"name": "late", "env": "python", "source": source}
    assert_full(control(platform, "POST", "/v1/packages", json=pkg), small_disk)
    assert_full(control(platform, "POST", "/v1/environments", json={"name": "py2"}), small_disk)
    archive = _zip(code.read_bytes())
    assert_full(control(platform, "POST", "/v1/archives", content=archive), small_disk)
    refused = platform.cli("fn", "create", "--name", "late", "--code", str(code))
    assert_one_line_error(refused, f"no space left on the disk of the data dir {small_disk}")
    assert_full(platform.request("POST", "/async-function/queue?s=0"), small_disk)
    assert_full(
        platform.request("POST", "/function/kept", headers={"prefer": "respond-async"}),
        small_disk,
    )

    # The platform keeps serving what exists, and reads work.
    for _ in range(3):
        assert platform.get("/function/kept").json() == {"slept": "0"}
    assert control(platform, "GET", "/v1/functions").status_code == 200

    # Queued work waits (it cannot record that it started, or how it ended) instead of being
    # lost: the platform says so once, and the records show unfinished work.
    deadline = time.monotonic() + 60.0
    while "invocation records wait until it has space" not in platform.stderr():
        assert time.monotonic() < deadline, platform.stderr()
        time.sleep(0.05)
    statuses = [status_of(platform, i) for i in accepted]
    assert any(s not in FINAL for s in statuses), statuses

    # Deletes still work: they are how space is freed.
    platform.ok("fn", "delete", "--name", "doomed")
    assert control(platform, "GET", "/v1/functions/doomed").status_code == 404

    # Space returns: every accepted invocation finishes, without a restart.
    filler.unlink()
    deadline = time.monotonic() + 60.0
    while True:
        statuses = [status_of(platform, i) for i in accepted]
        if all(s in FINAL for s in statuses):
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.1)
    assert statuses == ["succeeded"] * len(accepted)
    for invocation_id in accepted:
        assert platform.get(f"/invocations/{invocation_id}/result").json() == {"slept": "0.5"}

    # And new writes work again.
    response = platform.request("POST", "/async-function/queue?s=0")
    assert response.status_code == 202, response.text
    platform.ok("fn", "create", "--name", "after", "--code", str(code))
    assert platform.get("/function/after").json() == {"slept": "0"}
    platform.stop_cleanly()
    assert "Traceback" not in platform.stderr(), platform.stderr()[-5000:]


def _zip(source: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("sleepy.py", source)
    return buffer.getvalue()
