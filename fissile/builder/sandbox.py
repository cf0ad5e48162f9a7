"""The sandbox a build runs in, as the supervisor prepares it.

A build command and ``pip install`` run code the tenant wrote (a ``setup.py``, a build
script), so they get the instance's kind of sandbox: a cgroup with memory, CPU and process
limits, their own PID, mount, IPC and UTS namespaces, a private root in which only the system,
the Python installation, the source (``/build/src``), the deploy dir (``/build/deploy``) and a
private ``/tmp`` exist, an unprivileged uid, the seccomp filter and a scrubbed environment. The
host network is kept: pip needs the package index. The work itself is done by a small helper
process (``fissile.builder._sandboxed``) that applies all this and then runs the command.

Where the host cannot sandbox (not root, ``--sandbox off``), builds run as before, as the
supervisor's user, with only the scrubbed environment, and every build log says so.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BUILD_CPU",
    "BUILD_LAYERS",
    "BUILD_MEMORY",
    "BUILD_PIDS",
    "BUILD_UID",
    "BuildSandbox",
    "build_environment",
    "build_layers",
    "remove_stale_work",
]

# Below the instances' uids (100000 and up): a build never shares a uid with a function.
BUILD_UID = 99_000
BUILD_MEMORY = 1024**3
BUILD_CPU = 1.0
BUILD_PIDS = 256
# Where the build sees its directories (``SRC_PKG``, ``DEPLOY_PKG``) inside its root.
SRC_PKG = "/build/src"
DEPLOY_PKG = "/build/deploy"
# The variables a build gets from the supervisor's environment: LANG, and pip's own settings
# (an index URL, a proxy, PIP_NO_INDEX...); never a token or a credential of the platform.
_KEPT = ("LANG", "LC_ALL")
_KEPT_PREFIXES = ("PIP_",)

# The layers of ``fissile.sandbox.FEATURES`` a build does without even where instances get
# them, and why.
BUILD_LAYERS: dict[str, str] = {
    "network_namespace": "builds keep the host network: pip needs the package index",
}
# The layers the build sandbox applies (where the host has them): named, so that a layer added
# for instances is never reported for builds before the build sandbox applies it too.
_APPLIED = (
    "process",
    "rlimits",
    "pid_namespace",
    "mount_namespace",
    "ipc_uts_namespace",
    "cgroup_memory",
    "cgroup_cpu",
    "cgroup_pids",
    "seccomp",
    "unprivileged_uid",
)
# Without these the build sandbox is not used at all (the build runs as the platform's user).
_NEEDED = ("pid_namespace", "mount_namespace", "ipc_uts_namespace", "unprivileged_uid")


def build_layers(active: dict[str, bool]) -> dict[str, bool]:
    """Which isolation layers builds get, given those instances get (``Sandbox.active()``)."""
    if not all(active.get(name) for name in _NEEDED):
        return {name: name == "process" for name in active}
    return {name: bool(on) and name in _APPLIED for name, on in active.items()}


def build_environment(src_pkg: str, deploy_pkg: str, home: str) -> dict[str, str]:
    """The whole environment of a build: PATH (the platform's Python first), HOME, LANG,
    SRC_PKG, DEPLOY_PKG and pip's own settings."""
    path = os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin"
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{path}",
        "HOME": home,
        "SRC_PKG": src_pkg,
        "DEPLOY_PKG": deploy_pkg,
    }
    for key, value in os.environ.items():
        if key in _KEPT or key.startswith(_KEPT_PREFIXES):
            env[key] = value
    env.setdefault("LANG", "C.UTF-8")
    return env


def remove_stale_work(work_root: Path) -> list[str]:
    """Remove the ``build-*`` scratch dirs a killed supervisor left (its builds are dead: their
    cgroup was killed, or they died with it); the names removed. Call with the data dir locked."""
    removed = []
    for entry in sorted(work_root.glob("build-*")):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed


@dataclass(frozen=True)
class Layout:
    """One build's directories: on the host (below its ``work`` dir) and as the build sees them."""

    work: Path
    src_pkg: str
    deploy_pkg: str
    home: str

    @property
    def src(self) -> Path:
        """The extracted source; the build sees it (read-only, or through an overlay whose
        writes land in ``upper``) as ``SRC_PKG``."""
        return self.work / "src"

    @property
    def deploy(self) -> Path:
        """Where ``DEPLOY_PKG`` is on the host."""
        return self.work / "build" / "deploy"


@dataclass
class BuildSandbox:
    """What builds get on this platform; ``enabled`` False means they run unsandboxed."""

    enabled: bool = False
    warning: str = ""
    plan: dict[str, Any] = field(default_factory=dict)
    cgroups: Any = None
    seccomp: bool = False
    uid: int | None = None

    @classmethod
    def unsandboxed(cls, why: str) -> BuildSandbox:
        return cls(enabled=False, warning=f"WARNING: this build is not sandboxed ({why})")

    @classmethod
    def like_instances(
        cls, active: dict[str, bool], data_dir: Path, deploy_root: Path, cgroups: Any
    ) -> BuildSandbox:
        """The build sandbox matching the instances' (``Sandbox.active()``): sandboxed only
        where the namespaces, a private root and the uid drop all work."""
        missing = [name for name in _NEEDED if not active.get(name)]
        if missing:
            return cls.unsandboxed(
                f"the host lacks {', '.join(missing)}: it runs as the platform's user"
                " with the platform's view of the filesystem"
            )
        from fissile.sandbox.filesystem import plan

        mounts = plan(str(data_dir), str(deploy_root), "", 0)
        warning = ""
        if cgroups is None:
            warning = "WARNING: no cgroups on this host: the build's memory and CPU are unlimited"
        return cls(
            enabled=True,
            warning=warning,
            plan={"binds": mounts["binds"], "masks": mounts["masks"]},
            cgroups=cgroups,
            seccomp=bool(active.get("seccomp")),
            uid=BUILD_UID,
        )

    def layout(self, work: Path) -> Layout:
        if self.enabled:
            return Layout(work, SRC_PKG, DEPLOY_PKG, "/tmp")
        return Layout(work, str(work / "src"), str(work / "build" / "deploy"), str(work / "tmp"))

    def prepare(self, layout: Layout) -> None:
        """Make the build's directories, owned by the build's uid where it must write."""
        work = layout.work
        for name in ("build", "tmp"):
            (work / name).mkdir()
        if not self.enabled:
            return
        (work / "build" / "src").mkdir()  # where the source is mounted
        for name in ("upper", "overlay", "root"):
            (work / name).mkdir()
        assert self.uid is not None
        # The build sees the extracted source through an overlay: what it writes there (a
        # local requirement's setup.py writes build/ and *.egg-info next to itself) lands in
        # the upper layer, and the source itself stays as extracted. Writing needs the files
        # to be the build uid's.
        for path in (work / "build", work / "tmp", work / "upper"):
            os.chown(path, self.uid, self.uid)
        os.chmod(work / "tmp", 0o700)
        _chown_tree(layout.src, self.uid)

    def helper_config(
        self, layout: Layout, command: list[str], cwd: str, cgroup_procs: list[str]
    ) -> dict[str, Any]:
        """What ``fissile.builder._sandboxed`` applies before it runs ``command``."""
        work = str(layout.work)
        return {
            "command": command,
            "cwd": cwd,
            "parent": os.getpid(),
            "cgroup_procs": cgroup_procs,
            "uid": self.uid,
            "seccomp": self.seccomp,
            "root": {
                **self.plan,
                "staging": f"{work}/root",
                "build": f"{work}/build",
                "src": f"{work}/src",
                "upper": f"{work}/upper",
                "overlay": f"{work}/overlay",
                "tmp": f"{work}/tmp",
            },
        }


def _chown_tree(root: Path, uid: int) -> None:
    for directory, dirs, files in os.walk(root):
        os.chown(directory, uid, uid, follow_symlinks=False)
        for name in dirs + files:
            os.chown(os.path.join(directory, name), uid, uid, follow_symlinks=False)
