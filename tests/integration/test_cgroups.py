"""fissile/sandbox/cgroups.py on the real cgroups of this machine (root; v1 or v2).

Every test works below its own prefix group (``fissile-test-<pid>``), never the platform's, and
removes every group and process it made. Without usable cgroups the tests skip, except under
``CI=true`` where they fail: CI must run them.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from intkit import pid_alive

from fissile.sandbox.cgroups import CgroupError, Cgroups, Group, Limits, cleanup_stale, detect

MiB = 1024 * 1024
PREFIX = f"fissile-test-{os.getpid()}"
UNIFIED_HYBRID = Path("/sys/fs/cgroup/unified")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


@pytest.fixture
def cgroups() -> Iterator[Cgroups]:
    found = detect(prefix=PREFIX)
    if found is None:
        reason = (
            f"no writable cgroup hierarchy below /sys/fs/cgroup (euid {os.geteuid()}; "
            "the tests need root and a writable cgroupfs)"
        )
        if _in_ci():
            pytest.fail(f"CI=true: cgroup tests must run, but {reason}")
        pytest.skip(reason)
    try:
        yield found
    finally:
        cleanup_stale(found, remove_root=True)


def _need(cgroups: Cgroups, *controllers: str) -> None:
    missing = [c for c in controllers if not cgroups.available()[c]]
    if missing:
        reason = f"cgroup controllers {missing} are not usable here"
        if _in_ci():
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)


class Children:
    """Forked children that start their body only once they are inside a group."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    def spawn(self, group: Group, body: Callable[[], int]) -> int:
        gate_read, gate_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 70
            try:
                os.close(gate_write)
                if os.read(gate_read, 1) == b"x":
                    code = body()
            except BaseException:
                traceback.print_exc()
                code = 71
            finally:
                os._exit(code)
        os.close(gate_read)
        self.pids.append(pid)
        try:
            group.add(pid)
        except BaseException:
            os.kill(pid, signal.SIGKILL)  # never let the body run outside the group
            raise
        finally:
            os.write(gate_write, b"x")
            os.close(gate_write)
        return pid

    def wait(self, pid: int) -> tuple[int, float]:
        """The wait status and the CPU seconds (user + system) the child used."""
        _, status, usage = os.wait4(pid, 0)
        self.pids.remove(pid)
        return status, usage.ru_utime + usage.ru_stime

    def reap_all(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)  # our unreaped child: its pid cannot be reused
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
        self.pids.clear()


@pytest.fixture
def children() -> Iterator[Children]:
    made = Children()
    try:
        yield made
    finally:
        made.reap_all()


def _killed_by(status: int) -> int | None:
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else None


def _allocate(size: int) -> int:
    block = bytearray(size)
    for offset in range(0, size, 4096):  # touch every page: untouched pages cost nothing
        block[offset] = 1
    return 0


def test_exceeding_the_memory_limit_is_an_oom_kill(cgroups: Cgroups, children: Children) -> None:
    _need(cgroups, "memory")
    group = cgroups.create("oom")
    group.set_limits(Limits(memory=64 * MiB))
    pid = children.spawn(group, lambda: _allocate(200 * MiB))
    status, _ = children.wait(pid)
    assert _killed_by(status) == signal.SIGKILL
    assert group.oom_killed()
    peak = group.memory_peak()
    if peak is not None:
        assert 32 * MiB < peak <= 65 * MiB

    calm = cgroups.create("calm")
    calm.set_limits(Limits(memory=64 * MiB))
    pid = children.spawn(calm, lambda: _allocate(16 * MiB))
    status, _ = children.wait(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert not calm.oom_killed()
    group.remove()
    calm.remove()


def _fork_until_refused() -> int:
    """Fork children that wait until refused; the number that were started (99: never
    refused, 98: refused otherwise than with EAGAIN)."""
    started: list[int] = []
    code = 99
    try:
        while len(started) < 50:
            try:
                pid = os.fork()
            except BlockingIOError:
                code = len(started)
                break
            except OSError:
                code = 98
                break
            if pid == 0:  # pragma: no cover - a grandchild
                time.sleep(30)
                os._exit(0)
            started.append(pid)
    finally:
        for pid in started:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return code


def test_the_pids_limit_stops_forks_inside_only(cgroups: Cgroups, children: Children) -> None:
    _need(cgroups, "pids")
    group = cgroups.create("forks")
    group.set_limits(Limits(pids=10))
    pid = children.spawn(group, _fork_until_refused)
    status, _ = children.wait(pid)
    # The limit counts every task of the group: the child itself and 9 forks; the next fork
    # (the 11th process counting the child's own start) fails with EAGAIN.
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 9
    assert group.pids() == []
    # This process, outside the group, still forks freely.
    others: list[int] = []
    for _ in range(12):
        other = os.fork()
        if other == 0:  # pragma: no cover - a child
            os._exit(0)
        others.append(other)
    for other in others:
        assert os.waitpid(other, 0)[1] == 0
    group.remove()


def _spin(seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    return 0


def test_the_cpu_quota_throttles_a_busy_loop(cgroups: Cgroups, children: Children) -> None:
    _need(cgroups, "cpu")
    group = cgroups.create("spin")
    group.set_limits(Limits(cpu=0.2))
    pid = children.spawn(group, lambda: _spin(1.0))
    status, cpu_seconds = children.wait(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    # 0.2 cores for 1 s of wall time: about 0.2 s of CPU (unthrottled it would be 1 s).
    assert 0.03 < cpu_seconds < 0.45, cpu_seconds
    group.remove()


def _child_with_grandchild(report: int) -> int:
    grandchild = os.fork()
    if grandchild == 0:  # pragma: no cover - the grandchild
        time.sleep(20)
        os._exit(0)
    os.write(report, f"{grandchild}\n".encode())
    time.sleep(20)
    return 0


def test_kill_all_kills_children_and_grandchildren(cgroups: Cgroups, children: Children) -> None:
    group = cgroups.create("tree")
    report_read, report_write = os.pipe()
    try:
        pid = children.spawn(group, lambda: _child_with_grandchild(report_write))
        os.close(report_write)
        grandchild = int(os.read(report_read, 32).decode())
    finally:
        os.close(report_read)
    assert group.pids() == sorted([pid, grandchild])
    started = time.monotonic()
    group.kill_all()
    assert time.monotonic() - started < 1.0
    assert group.pids() == []
    status, _ = children.wait(pid)
    assert _killed_by(status) == signal.SIGKILL
    deadline = time.monotonic() + 2
    while pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not pid_alive(grandchild)
    group.kill_all()  # an empty group: nothing to do
    group.remove()


def test_kill_all_without_waiting_and_errors_are_oserrors(
    cgroups: Cgroups, children: Children
) -> None:
    group = cgroups.create("nowait")
    pid = children.spawn(group, lambda: _spin(10))
    group.kill_all(timeout=0)  # signals only: returns at once
    status, _ = children.wait(pid)
    assert _killed_by(status) == signal.SIGKILL
    assert group.pids() == []
    group.remove()
    with pytest.raises(OSError):  # callers handling OSError handle CgroupError
        group.add(pid)  # the group is gone (and so is the process)


def test_remove_leaves_no_directory_and_is_idempotent(cgroups: Cgroups, children: Children) -> None:
    group = cgroups.create("gone")
    assert group.paths and all(path.is_dir() for path in group.paths)
    assert "gone" in cgroups.names()
    pid = children.spawn(group, lambda: _spin(10))
    with pytest.raises(CgroupError, match="processes inside"):
        group.remove(timeout=0.05)  # a live process keeps the group
    assert all(path.is_dir() for path in group.paths)
    group.kill_all()
    # Not yet reaped: a zombie does not keep a group.
    group.remove()
    assert not any(path.exists() for path in group.paths)
    assert "gone" not in cgroups.names()
    group.remove()
    status, _ = children.wait(pid)
    assert _killed_by(status) == signal.SIGKILL


def _settings(cgroups: Cgroups, group: Group) -> dict[str, str]:
    """The memory, swap, cpu and pids settings of ``group`` as the kernel reports them."""
    if cgroups.version == 1:
        files = {
            "memory": "memory.limit_in_bytes",
            "swap": "memory.memsw.limit_in_bytes",
            "cpu": "cpu.cfs_quota_us",
            "period": "cpu.cfs_period_us",
            "pids": "pids.max",
        }
    else:
        files = {
            "memory": "memory.max",
            "swap": "memory.swap.max",
            "cpu": "cpu.max",
            "pids": "pids.max",
        }
    found: dict[str, str] = {}
    for key, name in files.items():
        for directory in group.paths:
            if (directory / name).exists():
                found[key] = (directory / name).read_text().strip()
    return found


def test_limits_can_be_lowered_raised_and_lifted(cgroups: Cgroups) -> None:
    group = cgroups.create("limits")
    available = cgroups.available()
    v1 = cgroups.version == 1
    if available["memory"]:
        for memory in (128 * MiB, 32 * MiB, 256 * MiB, 64 * MiB):
            group.set_limits(Limits(memory=memory))
            settings = _settings(cgroups, group)
            assert int(settings["memory"]) == memory
            if "swap" in settings:  # swap cannot extend the limit
                assert settings["swap"] == (str(memory) if v1 else "0")
        group.set_limits(Limits(memory=None))
        settings = _settings(cgroups, group)
        assert (int(settings["memory"]) >= 2**62) if v1 else settings["memory"] == "max"
        if "swap" in settings:
            assert (int(settings["swap"]) >= 2**62) if v1 else settings["swap"] == "max"
    if available["cpu"]:
        group.set_limits(Limits(cpu=0.5))
        settings = _settings(cgroups, group)
        # Quotas per 10 ms period (CPU_PERIOD_US): bursts stay short.
        assert settings["cpu"] == ("5000" if v1 else "5000 10000")
        assert settings.get("period", "10000") == "10000"
        group.set_limits(Limits(cpu=2.5))
        assert _settings(cgroups, group)["cpu"] == ("25000" if v1 else "25000 10000")
        group.set_limits(Limits(cpu=0.01))  # below the kernel's 1 ms minimum: clamped
        assert _settings(cgroups, group)["cpu"] == ("1000" if v1 else "1000 10000")
        group.set_limits(Limits(cpu=None))
        assert _settings(cgroups, group)["cpu"] == ("-1" if v1 else "max 10000")
    if available["pids"]:
        group.set_limits(Limits(pids=5))
        assert _settings(cgroups, group)["pids"] == "5"
        group.set_limits(Limits(pids=None))
        assert _settings(cgroups, group)["pids"] == "max"
    group.remove()


def test_invalid_limits_and_names_are_refused(cgroups: Cgroups) -> None:
    refused: list[Callable[[], Limits]] = [
        lambda: Limits(memory=0),
        lambda: Limits(cpu=0.0),
        lambda: Limits(cpu=float("nan")),
        lambda: Limits(pids=0),
    ]
    for make in refused:
        with pytest.raises(ValueError):
            make()
    for name in ("", ".", "..", ".hidden", "a/b", "../escape", "x" * 201):
        with pytest.raises(ValueError):
            cgroups.create(name)
    group = cgroups.create("twice")
    with pytest.raises(CgroupError, match="already exists"):
        cgroups.create("twice")
    with pytest.raises(CgroupError, match="no cgroup"):
        cgroups.open("never-made")
    assert cgroups.open("twice").paths == group.paths
    group.remove()


def test_cleanup_stale_kills_and_removes_what_a_crashed_run_left(
    cgroups: Cgroups, children: Children
) -> None:
    left = cgroups.create("left-behind")
    pid = children.spawn(left, lambda: _spin(10))
    empty = cgroups.create("empty")
    restarted = detect(prefix=PREFIX)  # what a new supervisor would find
    assert restarted is not None
    assert cleanup_stale(restarted) == ["empty", "left-behind"]
    status, _ = children.wait(pid)
    assert _killed_by(status) == signal.SIGKILL
    assert restarted.names() == []
    assert not any(path.exists() for path in left.paths + empty.paths)


def test_detect_reports_unusable_hierarchies_as_none(tmp_path: Path) -> None:
    assert detect(tmp_path) is None  # not a cgroup filesystem
    assert detect(tmp_path / "missing") is None
    with pytest.raises(ValueError):
        detect(prefix="../escape")
    if os.geteuid() != 0:
        return
    # Not root: nothing is writable, detect answers None instead of raising.
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            code = 0 if detect(prefix=f"{PREFIX}-nobody") is None else 2
        except BaseException:
            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    for pattern in (f"{PREFIX}-nobody", f"*/{PREFIX}-nobody"):  # v2, v1
        assert not any(Path("/sys/fs/cgroup").glob(pattern))


@pytest.mark.skipif(
    not (UNIFIED_HYBRID / "cgroup.controllers").is_file() or os.geteuid() != 0,
    reason="no hybrid cgroup2 mount at /sys/fs/cgroup/unified (the other tests cover the "
    "host's own cgroup version)",
)
def test_v2_lifecycle_on_the_hybrid_unified_hierarchy(children: Children) -> None:
    """A v1 host's cgroup2 mount has no memory/cpu/pids controller, but it runs the v2 code
    for creating, moving, listing, killing (cgroup.kill) and removing groups."""
    unified = detect(UNIFIED_HYBRID, prefix=PREFIX)
    assert unified is not None and unified.version == 2
    try:
        group = unified.create("v2")
        assert group.paths == (UNIFIED_HYBRID / PREFIX / "v2",)
        group.set_limits(Limits(memory=64 * MiB, cpu=0.5, pids=10))  # unusable: skipped
        report_read, report_write = os.pipe()
        try:
            pid = children.spawn(group, lambda: _child_with_grandchild(report_write))
            os.close(report_write)
            grandchild = int(os.read(report_read, 32).decode())
        finally:
            os.close(report_read)
        assert group.pids() == sorted([pid, grandchild])
        group.kill_all()
        assert group.pids() == []
        status, _ = children.wait(pid)
        assert _killed_by(status) == signal.SIGKILL
        assert not group.oom_killed()
        assert group.memory_peak() is None or not unified.available()["memory"]
        group.remove()
        assert not group.paths[0].exists()
    finally:
        cleanup_stale(unified, remove_root=True)
    assert not (UNIFIED_HYBRID / PREFIX).exists()
