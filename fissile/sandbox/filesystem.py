"""The filesystem an instance sees.

A fresh tmpfs becomes its root: the host's system directories and the Python installation are
bound into it read-only at their usual paths, ``/tmp`` and ``/dev/shm`` are private
size-limited tmpfs mounts, ``/sys`` is the host's sysfs alone (read-only, none of the
filesystems mounted below it, so ``/sys/fs/cgroup`` is empty), ``/proc`` belongs to the
instance's PID namespace, and ``/dev`` holds only null, zero, full, random and urandom. The
platform's data directory is not there (masked by an empty mount where it would show through a
bound directory). At fork time every package is
reachable at ``/.deploy`` (root-only) because the function is not known yet; specialization binds
the function's own package at ``/function`` and detaches ``/.deploy`` before any user code runs.
The directory of the platform socket (``context.invoke``/``publish``) is bound read-only at
``/run/fissile``: a unix socket on a read-only mount can still be connected to. The values root
(secrets and config maps, ``fissile.values.mounts``) is reachable at ``/.values`` (root-only)
until specialization binds the function's own at ``/secrets`` and ``/configs``, read-only, and
detaches the rest.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from fissile.sandbox._libc import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    mount,
    pivot_root,
    umount,
)

SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys")
DEVICES = ("null", "zero", "full", "random", "urandom")
FUNCTION_DIR = "/function"
PLATFORM_DIR = "/run/fissile"
_DEPLOY_DIR = "/.deploy"
_VALUES_DIR = "/.values"
VALUE_MOUNTS = {"secrets": "/secrets", "configs": "/configs"}
# Bound without their submounts (cgroup, debugfs, securityfs, bpf, ... under /sys).
_FLAT_BINDS = frozenset({"/sys"})


def plan(
    data_dir: str,
    deploy_root: str,
    staging: str,
    tmp_size: int,
    platform_dir: str | None = None,
    values_root: str | None = None,
) -> dict[str, Any]:
    """What ``build_root`` will mount, computed once by the supervisor."""
    candidates = [p for p in SYSTEM_PATHS if os.path.lexists(p)]
    # fissile's own package too: with an editable install it is on no sys.path entry.
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for path in (sys.prefix, sys.base_prefix, sys.exec_prefix, package, *sys.path):
        if path and os.path.isabs(path) and os.path.isdir(path):
            candidates.append(os.path.normpath(path))
    binds: list[str] = []
    for path in sorted(set(candidates), key=len):
        if not any(_under(path, bound) for bound in binds) and not _under(path, data_dir):
            binds.append(path)
    hidden = [data_dir] if values_root is None else [data_dir, values_root]
    masks = [path for path in hidden if any(_under(path, bound) for bound in binds)]
    return {
        "binds": binds,
        "masks": masks,
        "deploy_root": deploy_root,
        "staging": staging,
        "tmp_size": tmp_size,
        "platform_dir": platform_dir,
        "values_root": values_root,
    }


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _bind(source: str, target: str, writable: bool = False, recursive: bool = True) -> None:
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0), None)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | (0 if writable else MS_RDONLY)
    mount(None, target, None, flags, None)


def _tmpfs(target: str, size: int, mode: str, extra: int = 0) -> None:
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | extra, f"size={size},mode={mode}")


def build_root(plan: dict[str, Any]) -> None:
    """Build the instance's root and switch to it. Needs its own mount namespace (and its own
    PID namespace for a private ``/proc``)."""
    root = plan["staging"]
    mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    _tmpfs(root, 1 << 20, "755")
    # Special mounts first, so that binds below /tmp (a virtualenv there, say) land on top.
    os.makedirs(root + "/proc", exist_ok=True)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)

    dev = root + "/dev"
    os.makedirs(dev, exist_ok=True)
    _tmpfs(dev, 65536, "755")
    for name in DEVICES:
        with open(f"{dev}/{name}", "w"):
            pass
        mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND, None)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0")):
        os.symlink(target, f"{dev}/{name}")
    os.symlink("/proc/self/fd/1", f"{dev}/stdout")
    os.symlink("/proc/self/fd/2", f"{dev}/stderr")
    os.makedirs(dev + "/shm")
    _tmpfs(dev + "/shm", plan["tmp_size"], "1777", MS_NOEXEC)

    os.makedirs(root + "/tmp", exist_ok=True)
    _tmpfs(root + "/tmp", plan["tmp_size"], "1777")

    for path in plan["binds"]:
        target = root + path
        if os.path.islink(path):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(os.readlink(path), target)
        elif os.path.isdir(path):
            os.makedirs(target, exist_ok=True)
            # /sys without the mounts below it: a read-only remount covers only the top one,
            # so a recursive bind left the host's cgroup hierarchies writable (by permission
            # only) and showed every other instance's cgroup figures under /sys/fs/cgroup.
            _bind(path, target, recursive=path not in _FLAT_BINDS)
    for path in plan["masks"]:
        if os.path.isdir(root + path):
            _tmpfs(root + path, 4096, "000", MS_RDONLY | MS_NOEXEC)

    if plan.get("platform_dir"):
        os.makedirs(root + PLATFORM_DIR, exist_ok=True)
        _bind(plan["platform_dir"], root + PLATFORM_DIR)

    if plan.get("values_root"):
        os.makedirs(root + _VALUES_DIR, mode=0o700)
        _bind(plan["values_root"], root + _VALUES_DIR)
        for target in VALUE_MOUNTS.values():
            os.makedirs(root + target)

    os.makedirs(root + _DEPLOY_DIR, mode=0o700)
    _bind(plan["deploy_root"], root + _DEPLOY_DIR)
    os.makedirs(root + FUNCTION_DIR)

    os.makedirs(root + "/.old")
    pivot_root(root, root + "/.old")
    os.chdir("/")
    umount("/.old", MNT_DETACH)
    os.rmdir("/.old")
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)


# Compiled on import, in the zygote: compiling it in each instance cost ~0.3 ms of a cold start.
_DEPLOY_KEY = re.compile(r"[0-9a-f]{64}")
_VALUES_KEY = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\.[0-9]+")


def mount_function(deploy_dir: str) -> str:
    """Show only this function's package, at ``/function``; hide every other package."""
    key = os.path.basename(os.path.normpath(deploy_dir))
    if not _DEPLOY_KEY.fullmatch(key):
        raise ValueError(f"unexpected deploy directory {deploy_dir!r}")
    _bind(f"{_DEPLOY_DIR}/{key}", FUNCTION_DIR)
    umount(_DEPLOY_DIR, MNT_DETACH)
    return FUNCTION_DIR


def mount_values(values_dir: str | None) -> None:
    """Show this function's secrets and config maps, read-only, at ``/secrets`` and
    ``/configs``; hide every other function's."""
    if not os.path.isdir(_VALUES_DIR):
        return  # a platform without a values root
    if values_dir:
        key = os.path.basename(os.path.normpath(values_dir))
        if not _VALUES_KEY.fullmatch(key):
            raise ValueError(f"unexpected values directory {values_dir!r}")
        for name, target in VALUE_MOUNTS.items():
            _bind(f"{_VALUES_DIR}/{key}/{name}", target)
    umount(_VALUES_DIR, MNT_DETACH)
