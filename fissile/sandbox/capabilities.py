"""What isolation this host allows: probed once at start, printed by ``fissile doctor``."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from fissile.sandbox import _libc

# Each feature, what it stops, and what it needs.
FEATURES: dict[str, str] = {
    "process": "each instance is its own process and process group (always)",
    "rlimits": "open files, file size, no core dumps (always)",
    "pid_namespace": "instances see only their own processes; all die with the instance",
    "mount_namespace": "private filesystem: read-only system, private /tmp, no data dir",
    "ipc_uts_namespace": "private System V IPC and hostname",
    "network_namespace": "--network none: only a private loopback",
    "cgroup_memory": "--memory enforced, out-of-memory reported",
    "cgroup_cpu": "--cpu enforced as a CPU quota",
    "cgroup_pids": "a process limit (fork bombs)",
    "seccomp": "mount, unshare, ptrace, kexec, modules, reboot... denied",
    "unprivileged_uid": "function code runs as an unprivileged user",
}


@dataclass
class Capabilities:
    supported: dict[str, bool] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def full(self) -> bool:
        return all(self.supported.values())

    def missing(self) -> list[str]:
        return [name for name, ok in self.supported.items() if not ok]

    def summary(self) -> str:
        if self.full:
            return "sandbox: full isolation (namespaces, cgroups, seccomp, unprivileged uid)"
        missing = ", ".join(self.missing())
        return f"sandbox: DEGRADED, missing {missing} (run `fissile doctor` for why)"


def probe() -> Capabilities:
    caps = Capabilities()

    def record(name: str, ok: bool, reason: str = "") -> None:
        caps.supported[name] = ok
        if not ok and reason:
            caps.reasons[name] = reason

    linux = sys.platform == "linux"
    record("process", True)
    record("rlimits", True)
    root = linux and os.geteuid() == 0
    not_root = "needs root" if linux else "needs Linux"
    for name, flags in (
        ("pid_namespace", _libc.CLONE_NEWPID),
        ("mount_namespace", _libc.CLONE_NEWNS),
        ("ipc_uts_namespace", _libc.CLONE_NEWIPC | _libc.CLONE_NEWUTS),
        ("network_namespace", _libc.CLONE_NEWNET),
    ):
        if not root:
            record(name, False, not_root)
        else:
            error = _try_unshare(flags)
            record(name, error is None, error or "")

    from fissile.sandbox import cgroups

    groups = cgroups.detect(prefix=f"fissile-probe-{os.getpid()}") if root else None
    controllers = groups.available() if groups is not None else {}
    if groups is not None:
        cgroups.cleanup_stale(groups, remove_root=True)
    for controller in ("memory", "cpu", "pids"):
        ok = bool(controllers.get(controller))
        reason = not_root if not root else f"no writable {controller} cgroup controller"
        record(f"cgroup_{controller}", ok, reason)

    from fissile.sandbox import seccomp

    record("seccomp", seccomp.supported(), "the kernel or architecture lacks seccomp filters")
    record("unprivileged_uid", root, "dropping to another uid needs root")
    return caps


def _try_unshare(flags: int) -> str | None:
    """Whether a child may unshare ``flags``; tried in a fork so this process is untouched."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            _libc.unshare(flags)
            os.write(write, b"ok")
        except OSError as exc:
            os.write(write, str(exc).encode()[:200])
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 256).decode()
    os.close(read)
    os.waitpid(pid, 0)
    return None if answer == "ok" else answer or "unshare failed"
