"""The few Linux system calls the sandbox needs that Python 3.11's ``os`` lacks, via ctypes."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

# pivot_root has no glibc wrapper.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine())

_libc = (
    ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if sys.platform == "linux"
    else None
)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _lib() -> ctypes.CDLL:
    if _libc is None:
        raise OSError(38, "Linux system calls are not available on this platform")
    return _libc


def unshare(flags: int) -> None:
    _check(_lib().unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_lib().setns(fd, nstype), "setns")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    def b(value: str | None) -> bytes | None:
        return value.encode() if value is not None else None

    _check(
        _lib().mount(b(source), b(target), b(fstype), ctypes.c_ulong(flags), b(data)),
        f"mount {target}",
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_lib().umount2(target.encode(), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    if _SYS_PIVOT_ROOT is None:
        raise OSError(38, f"pivot_root: unknown architecture {platform.machine()}")
    _check(_lib().syscall(_SYS_PIVOT_ROOT, new_root.encode(), put_old.encode()), "pivot_root")


PR_CAPBSET_DROP = 24


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return 63  # the most a 64-bit capability set can name; unknown ones fail with EINVAL


# Read once, in the zygote: an instance's own /proc is mounted later.
CAP_LAST_CAP = _last_cap()


def drop_bounding_set() -> None:
    """Empty the capability bounding set: nothing this process executes can gain a capability
    (file capabilities included), whatever its uid. Needs CAP_SETPCAP; the capabilities the
    process holds now are untouched."""
    prctl = _lib().prctl
    for cap in range(CAP_LAST_CAP + 1):
        if prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # EINVAL
            _check(-1, f"prctl(PR_CAPBSET_DROP, {cap})")


def sethostname(name: str) -> None:
    raw = name.encode()[:64]
    _check(_lib().sethostname(raw, len(raw)), "sethostname")
