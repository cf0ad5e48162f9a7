"""Isolation of function instances.

Two moments matter. At **fork** (``apply_sandbox``, in the zygote's child, for warm instances that
do not know their function yet): rlimits, private mount/IPC/UTS namespaces (the PID namespace is
made by the zygote around the fork), and the instance's own root filesystem. At
**specialization** (``enter_function``, just before the function's module is imported): the
function's package mounted at ``/function`` (every other package detached), ``--network none``,
a scrubbed environment, an unprivileged uid and a seccomp filter. The supervisor meanwhile puts
each instance in a cgroup (``fissile.sandbox.cgroups``).

Which layers are active depends on the host (``probe()``): as root on Linux all of them; as an
ordinary user only rlimits and a separate process, with a warning.
"""

from __future__ import annotations

import os
import resource
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fissile.sandbox.capabilities import FEATURES, Capabilities, probe

__all__ = [
    "FEATURES",
    "MODES",
    "Capabilities",
    "Sandbox",
    "SandboxUnavailable",
    "apply_sandbox",
    "base_environment",
    "enter_function",
    "probe",
    "uid_for",
]

MODES = ("auto", "strict", "off")
DEFAULT_TMP_SIZE = 64 * 1024 * 1024
DEFAULT_PIDS = 256
MAX_FILE_SIZE = 1024**3
OPEN_FILES = 4096
# Denied syscalls that specialization still makes (mount_function, isolate_network): the
# seccomp filter's second stage.
SPECIALIZATION_SYSCALLS = ("mount", "umount2", "unshare")
_BASE_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")


class SandboxUnavailable(Exception):
    pass


def uid_for(function: str) -> int:
    """A fallback uid for a function (100000-164999) when the specialization spec names none.
    Names can collide here: the platform passes the uid it allocated in the store
    (``fissile.store.uids``), unique per function, so that one function cannot signal or read
    the files of another even where namespaces would not stop it."""
    return 100_000 + zlib.crc32(function.encode()) % 65_000


@dataclass
class Sandbox:
    """The supervisor's view: what is active, and the config each fork carries."""

    mode: str
    capabilities: Capabilities
    fork_config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def prepare(
        cls,
        mode: str,
        data_dir: str,
        deploy_root: str,
        staging: str,
        tmp_size: int = DEFAULT_TMP_SIZE,
        platform_dir: str | None = None,
        values_root: str | None = None,
    ) -> Sandbox:
        if mode not in MODES:
            raise ValueError(f"unknown sandbox mode {mode!r}; use one of {', '.join(MODES)}")
        caps = probe() if mode != "off" else Capabilities({"process": True, "rlimits": True})
        if mode == "strict" and not caps.full:
            why = "; ".join(
                f"{name}: {caps.reasons.get(name, 'unavailable')}" for name in caps.missing()
            )
            raise SandboxUnavailable(f"--sandbox strict needs full isolation; missing {why}")
        on = caps.supported.get
        config: dict[str, Any] = {
            "pid_namespace": bool(on("pid_namespace")),
            "namespaces": bool(on("mount_namespace") and on("ipc_uts_namespace")),
            "network_namespace": bool(on("network_namespace")),
            "seccomp": bool(on("seccomp")),
            "drop_uid": bool(on("unprivileged_uid")),
            "cgroups": bool(on("cgroup_memory")),
        }
        if config["namespaces"] and config["pid_namespace"]:
            from fissile.sandbox.filesystem import plan

            config["filesystem"] = plan(
                data_dir, deploy_root, staging, tmp_size, platform_dir, values_root
            )
        return cls(mode, caps, config)

    def active(self) -> dict[str, bool]:
        """Each feature of ``FEATURES`` and whether instances get it."""
        if self.mode == "off":
            return {name: name in ("process", "rlimits") for name in FEATURES}
        return {name: bool(self.capabilities.supported.get(name)) for name in FEATURES}

    def summary(self) -> str:
        if self.mode == "off":
            return (
                "sandbox: OFF (--sandbox off): instances are separate processes with rlimits only"
            )
        return self.capabilities.summary()


# -- in the instance, at fork -----------------------------------------------------------------


def apply_sandbox(config: dict[str, Any]) -> None:
    """Applied in the forked child before anything else runs there."""
    # Join the cgroup the supervisor made. On cgroup v1 the write waits ~10 ms for an RCU grace
    # period: paid here, while the instance warms up, not on the supervisor's event loop.
    for procs in config.get("cgroup_procs", ()):
        with open(procs, "w") as handle:
            handle.write("0")
    # Done now, not at specialization (~0.5 ms of every cold start there): the supervisor's
    # environment goes (it may hold a token or credentials).
    _scrub_environment()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_SIZE, MAX_FILE_SIZE))
    if config.get("namespaces"):
        from fissile.sandbox import _libc, namespaces

        namespaces.private_namespaces()
        _libc.sethostname("fissile")
        if config.get("filesystem"):
            from fissile.sandbox.filesystem import build_root

            build_root(config["filesystem"])
    if config.get("drop_uid"):
        from fissile.sandbox import _libc

        # Done now, while warm (~40 prctl calls): only the capabilities the process could gain
        # go; it keeps those it holds until the uid drop at specialization clears them.
        _libc.drop_bounding_set()
    if config.get("seccomp"):
        from fissile.sandbox.seccomp import DENIED_SYSCALLS, install_filter

        # The seccomp filter comes in two stages: installing the whole list cost 0.7-1.8 ms
        # of every cold start (the kernel checks a filter against every syscall number as it
        # installs it). All but what specialization itself needs is denied now, while warm;
        # specialization adds a small filter for the rest.
        install_filter(tuple(n for n in DENIED_SYSCALLS if n not in SPECIALIZATION_SYSCALLS))


# -- in the instance, at specialization ---------------------------------------------------------


def enter_function(config: dict[str, Any], spec: dict[str, Any]) -> str:
    """Confine the instance to one function; returns the directory to load its code from."""
    deploy_dir: str = spec["deploy_dir"]
    if spec.get("network") == "none":
        if not config.get("network_namespace"):
            raise SandboxUnavailable("--network none needs network namespaces (root on Linux)")
        from fissile.sandbox.namespaces import isolate_network

        isolate_network()
    if config.get("filesystem"):
        from fissile.sandbox.filesystem import mount_function, mount_values

        deploy_dir = mount_function(deploy_dir)
        mount_values(spec.get("values_dir"))
    if config.get("namespaces"):
        from fissile.sandbox import _libc

        _libc.sethostname(spec["function"])
    os.environ.update(spec.get("env_vars") or {})
    if not config.get("cgroups") and spec.get("memory"):
        _limit_data(int(spec["memory"]))
    if config.get("drop_uid"):
        uid = int(spec.get("uid") or uid_for(spec["function"]))
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        # A change of credentials clears the parent-death signal: arm it again, or this
        # instance would outlive a killed zygote.
        from fissile.executor._prctl import die_with_parent

        die_with_parent()
    if config.get("seccomp"):
        from fissile.sandbox.seccomp import install_filter

        install_filter(SPECIALIZATION_SYSCALLS)
    return deploy_dir


def base_environment(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The minimal environment of zygotes and instances: the few variables of ``source`` (the
    calling process's by default) that locale, time zone, TLS and PATH lookups need."""
    source = os.environ if source is None else source
    env = {key: source[key] for key in _BASE_ENV if key in source}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = "/tmp"
    env["TMPDIR"] = "/tmp"
    return env


def _scrub_environment() -> None:
    """Functions see only a minimal environment (plus their own variables, added at
    specialization) — never the supervisor's, which may hold a token or credentials. The
    zygote was already started with ``base_environment()``; this also drops what its own
    start-up may have set."""
    kept = base_environment()
    os.environ.clear()
    os.environ.update(kept)


def _limit_data(memory: int) -> None:
    """Without a memory cgroup, bound the data segment instead (coarser: counts reserved, not
    used, memory) on top of what the zygote already mapped."""
    current = 0
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmData:"):
                    current = int(line.split()[1]) * 1024
    except OSError:
        return
    limit = current + memory
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
