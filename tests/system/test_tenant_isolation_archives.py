"""Hostile packages and functions against the supervisor (issue 11: archives, caps, floods).

One hostile package or function per case; for each: it is blocked, the supervisor's resident
memory grows by at most 50 MB over the case, and a well-behaved neighbour keeps answering
correctly throughout. One dedicated platform with small operator caps, restarted once.
"""

from __future__ import annotations

import io
import re
import stat
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from syskit import Platform, write

pytestmark = pytest.mark.slow  # a dedicated platform, a restart and a 5 s flood: ~30 s

RSS_BUDGET = 50 * 1024 * 1024
CAPS = ("--max-memory", "1Gi", "--max-cpu", "1", "--max-scale-limit", "5", "--max-timeout", "10m")

NEIGHBOUR = """
    def main(request):
        return {"ok": True}
"""
PLAIN = """
    def main(request):
        return "still served"
"""
FLOOD_SECONDS = 5
FLOOD = f"""
    import sys, time
    def main(request):
        end, lines = time.monotonic() + {FLOOD_SECONDS}, 0
        while time.monotonic() < end:
            sys.stdout.write("flood " * 20 + "\\n")
            lines += 1
        sys.stdout.flush()
        return {{"printed": lines}}
"""
# The chain of the report: x climbs to / through p0/.../p6/up, evil.py reads through x.
CHAIN_BUILD = (
    "cp -R $SRC_PKG $DEPLOY_PKG && cd $DEPLOY_PKG && mkdir -p p0/p1/p2/p3/p4/p5/p6"
    " && ln -s ../../../../../../../.. p0/p1/p2/p3/p4/p5/p6/up"
    " && ln -s p0/p1/p2/p3/p4/p5/p6/up/../../.. x && ln -s x/dev/zero evil.py"
    " && ln -s /dev/zero zero.py && mkfifo fifo.py"
)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def symlink_chain_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("main.py", "def main(request):\n    return 'pwned?'\n")

        def link(name: str, target: str) -> None:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)

        archive.writestr("p0/p1/p2/p3/p4/p5/p6/keep.txt", "")
        link("p0/p1/p2/p3/p4/p5/p6/up", "../../../../../../..")
        link("x", "p0/p1/p2/p3/p4/p5/p6/up/../../..")
        link("evil.py", "x/dev/zero")
    return buffer.getvalue()


class Guard:
    """Over one case: the supervisor's RSS within budget, and the neighbour answering."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.answers: list[tuple[int, str]] = []
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.platform.pid))
            try:
                response = self.platform.get("/function/arch-neighbour", timeout=20.0)
                self.answers.append((response.status_code, response.text))
            except Exception as exc:  # any failure is a finding, not a crash of the test
                self.answers.append((0, repr(exc)))
            time.sleep(0.05)

    def __enter__(self) -> Guard:
        self.before = rss(self.platform.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self.peak = max(self.peak, rss(self.platform.pid))
        assert self.answers, "the neighbour was never called"
        bad = [a for a in self.answers if a != (200, '{"ok": true}')]
        assert not bad, f"the neighbour suffered: {bad[:5]}"
        growth = self.peak - self.before
        assert growth <= RSS_BUDGET, f"the supervisor grew by {growth / 2**20:.0f} MiB"


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = Platform(tmp_path_factory.mktemp("archives") / "data", CAPS)
    platform.start()
    code = tmp_path_factory.mktemp("archives-code")
    platform.ok_many(
        (
            "fn",
            "create",
            "--name",
            "arch-neighbour",
            "--code",
            str(write(code / "n.py", NEIGHBOUR)),
        ),
        ("fn", "create", "--name", "arch-flood", "--code", str(write(code / "f.py", FLOOD))),
    )
    assert platform.get("/function/arch-neighbour", timeout=30.0).json() == {"ok": True}
    yield platform
    try:
        platform.stop_cleanly()
    finally:
        platform.abandon()


def test_a_symlink_chain_zip_is_refused_and_planted_links_are_never_read(
    capped: Platform, tmp_path: Path
) -> None:
    chain = tmp_path / "chain.zip"
    chain.write_bytes(symlink_chain_zip())
    source = tmp_path / "plain"
    write(source / "plain.py", PLAIN)
    with Guard(capped):
        # The upload itself: refused before anything is stored or extracted.
        response = capped.http.post(
            f"{capped.api_url}/v1/archives",
            content=chain.read_bytes(),
            headers={
                "authorization": f"Bearer {(capped.data_dir / 'api-token').read_text().strip()}"
            },
        )
        assert response.status_code == 422, response.text
        assert "through other links in it" in response.json()["error"]["message"]
        refused = capped.cli(
            "pkg", "create", "--name", "arch-chain", "--env", "python", "--src", str(chain)
        )
        assert refused.rc != 0 and "points outside the archive" in refused.err, refused

        # The same chain planted by a build (links, a FIFO): the import-cache scanner follows
        # none of them, and the function is served.
        capped.ok(
            "pkg", "create", "--name", "arch-planted", "--env", "python", "--src", str(source),
            "--buildcmd", CHAIN_BUILD, "--wait",
        )  # fmt: skip
        capped.ok(
            "fn", "create", "--name", "arch-planted", "--pkg", "arch-planted",
            "--entrypoint", "plain.main",
        )  # fmt: skip
        answer = capped.get("/function/arch-planted", timeout=30.0)
        assert (answer.status_code, answer.text) == (200, "still served")

    # Every restart scans the deploy directories of the functions it serves again.
    capped.stop_cleanly()
    capped.http = httpx.Client(timeout=30.0)  # stop_cleanly closed the old one
    capped.start()
    assert capped.get("/function/arch-neighbour", timeout=30.0).json() == {"ok": True}
    with Guard(capped):
        answer = capped.get("/function/arch-planted", timeout=30.0)
        assert (answer.status_code, answer.text) == (200, "still served")
    assert "Traceback" not in capped.stderr()


def test_functions_over_the_caps_are_422_naming_the_cap(capped: Platform, tmp_path: Path) -> None:
    code = write(tmp_path / "c.py", PLAIN)
    cases = {
        ("--memory", "512Gi"): "512Gi is above the cap of 1Gi (--max-memory)",
        ("--cpu", "8"): "8 is above the cap of 1 (--max-cpu)",
        ("--max-scale", "1000"): "1000 is above the cap of 5 (--max-scale-limit)",
        ("--timeout", "1h"): "1h is above the cap of 10m (--max-timeout)",
    }
    with Guard(capped):
        for option, message in cases.items():
            result = capped.cli(
                "fn", "create", "--name", "arch-greedy", "--code", str(code), *option
            )
            assert result.rc != 0 and message in result.err, result
        assert capped.cli("fn", "get", "--name", "arch-greedy").rc != 0  # nothing was created
        capped.ok("fn", "create", "--name", "arch-greedy", "--code", str(code))
        updated = capped.cli("fn", "update", "--name", "arch-greedy", "--max-scale", "1000")
        assert updated.rc != 0 and "--max-scale-limit" in updated.err, updated

        project = tmp_path / "project"
        write(project / "greedy.py", PLAIN)
        capped.ok("spec", "init", cwd=project)
        spec = """
            apiVersion: fissile.dev/v1
            kind: Function
            name: arch-spec-greedy
            code: ../greedy.py
            memory: 512Gi
            timeout: 1h
        """
        write(project / "specs" / "greedy.yaml", spec)
        applied = capped.cli("spec", "apply", cwd=project)
        assert applied.rc != 0, applied
        assert "--max-memory" in applied.err and "--max-timeout" in applied.err, applied
        assert capped.cli("fn", "get", "--name", "arch-spec-greedy").rc != 0
        assert capped.get("/function/arch-greedy", timeout=30.0).text == "still served"


def test_a_stdout_flood_is_rate_limited_and_noted(capped: Platform) -> None:
    log = capped.data_dir / "logs" / "functions" / "arch-flood.log"
    cpu_before = _cpu_seconds(capped.pid)
    with Guard(capped):
        response = capped.get("/function/arch-flood", timeout=60.0)
        assert response.status_code == 200, response.text
        printed = response.json()["printed"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "[fissile] dropped" not in _read(log):
            time.sleep(0.1)
    cpu = _cpu_seconds(capped.pid) - cpu_before
    text = _read(log) + _read(log.with_suffix(".log.1"))
    written = sum("flood flood" in line for line in text.splitlines())
    dropped = sum(int(n) for n in re.findall(r"\[fissile\] dropped (\d+) lines", text))
    print(f"flood: {printed} lines printed, {written} logged, supervisor CPU {cpu:.2f}s")
    assert printed > 10 * written, (printed, written)  # the flood was real, and cut
    # 1000 lines/s per instance, a second's burst, slack for a slow machine.
    assert written <= 1000 * (FLOOD_SECONDS + 2)
    assert dropped > 0
    assert "rate limit 1000 lines/s, 1 MiB/s" in text


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks
