"""A seccomp-BPF filter that denies the kernel's administrative syscalls to the calling process.

Installed in an instance's forked child, after it dropped to an unprivileged uid and before user
code is imported. Pure ctypes: libseccomp's Python binding is not a dependency. The filter is
inherited by every thread and process the instance starts and cannot be removed.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import functools
import os
import platform
import struct
import sys
from collections.abc import Iterable
from typing import NoReturn

__all__ = [
    "DENIED_SYSCALLS",
    "SeccompError",
    "build_program",
    "install_filter",
    "supported",
]

DENIED_SYSCALLS: tuple[str, ...] = (
    # Filesystems, mounts and namespaces: the instance's view of the system is fixed.
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "open_tree", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at", "quotactl", "swapon", "swapoff",
    # Other processes' memory.
    "ptrace", "process_vm_readv", "process_vm_writev",
    # The kernel itself: modules, kexec, reboot, logs, BPF, perf, I/O ports.
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "create_module", "get_kernel_syms", "query_module", "reboot", "syslog", "acct", "bpf",
    "perf_event_open", "iopl", "ioperm", "lookup_dcookie", "uselib", "vhangup", "nfsservctl",
    # The clocks are shared with the host.
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    # Kernel keyrings are not namespaced; userfaultfd is a favourite of kernel exploits.
    "keyctl", "add_key", "request_key", "userfaultfd",
    # io_uring runs I/O outside the syscall path seccomp sees, and has been a steady source of
    # kernel exploits; Docker's default profile denies it too.
    "io_uring_setup", "io_uring_enter", "io_uring_register",
)  # fmt: skip

# Syscall numbers of the names this module knows: arch/x86/entry/syscalls/syscall_64.tbl and
# include/uapi/asm-generic/unistd.h (aarch64). A name missing from an arch's table does not
# exist there, so there is nothing to deny.
X86_64_SYSCALLS: dict[str, int] = {
    "clone": 56, "ptrace": 101, "syslog": 103, "uselib": 134, "vhangup": 153,
    "pivot_root": 155, "adjtimex": 159, "chroot": 161, "acct": 163, "settimeofday": 164,
    "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172,
    "ioperm": 173, "create_module": 174, "init_module": 175, "delete_module": 176,
    "get_kernel_syms": 177, "query_module": 178, "quotactl": 179, "nfsservctl": 180,
    "lookup_dcookie": 212, "clock_settime": 227, "kexec_load": 246, "add_key": 248,
    "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308,
    "process_vm_readv": 310, "process_vm_writev": 311, "finit_module": 313,
    "seccomp": 317, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "clone3": 435, "mount_setattr": 442,
}  # fmt: skip
AARCH64_SYSCALLS: dict[str, int] = {
    "lookup_dcookie": 18, "umount2": 39, "mount": 40, "pivot_root": 41, "nfsservctl": 42,
    "chroot": 51, "vhangup": 58, "quotactl": 60, "acct": 89, "unshare": 97, "kexec_load": 104,
    "init_module": 105, "delete_module": 106, "clock_settime": 112, "syslog": 116,
    "ptrace": 117, "reboot": 142, "settimeofday": 170, "adjtimex": 171, "add_key": 217,
    "request_key": 218, "keyctl": 219, "clone": 220, "swapon": 224, "swapoff": 225,
    "perf_event_open": 241, "name_to_handle_at": 264, "open_by_handle_at": 265,
    "clock_adjtime": 266, "setns": 268, "process_vm_readv": 270, "process_vm_writev": 271,
    "finit_module": 273, "seccomp": 277, "bpf": 280, "userfaultfd": 282,
    "kexec_file_load": 294, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435, "mount_setattr": 442,
}  # fmt: skip

# platform.machine() -> (AUDIT_ARCH_*, syscall table)
_ARCHES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (0xC000003E, X86_64_SYSCALLS),
    "aarch64": (0xC00000B7, AARCH64_SYSCALLS),
}

PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_DATA = 0x0000FFFF

# Flags of clone(2) that create namespaces: the same escape hatch as unshare(2).
CLONE_NAMESPACE_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
# x32 syscalls carry the x86_64 audit arch but a number with this bit set: without a check of
# their own, the x32 flavour of every denied syscall would get through.
X32_SYSCALL_BIT = 0x40000000

_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06
# Offsets in struct seccomp_data; the low half of args[0] on these little-endian arches.
_OFFSET_NR = 0
_OFFSET_ARCH = 4
_OFFSET_ARG0_LOW = 16


class SeccompError(OSError):
    """The filter could not be installed."""


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def _arch() -> tuple[int, dict[str, int]] | None:
    return _ARCHES.get(platform.machine()) if sys.platform == "linux" else None


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def supported() -> bool:
    """Whether this kernel and architecture can run the filter."""
    if _arch() is None:
        return False
    # Fails with EINVAL on a kernel built without CONFIG_SECCOMP.
    return int(_libc().prctl(PR_GET_SECCOMP, 0, 0, 0, 0)) >= 0


def build_program(denied: Iterable[str] = DENIED_SYSCALLS, errno: int = _errno.EPERM) -> bytes:
    """The BPF program ``install_filter`` loads, as an array of struct sock_filter."""
    if isinstance(denied, str):
        raise TypeError("denied must be an iterable of syscall names, not a str")
    return _program(frozenset(denied), errno, platform.machine())


@functools.lru_cache(maxsize=8)
def _program(names: frozenset[str], errno: int, machine: str) -> bytes:
    # Cached: building it costs ~0.8 ms, which an instance pays while warm, not at
    # specialization (apply_sandbox builds the default program).
    if not 0 < errno <= 4095:
        raise ValueError(f"errno must be between 1 and 4095, not {errno}")
    arch = _arch()
    if arch is None:
        raise SeccompError(_errno.ENOSYS, f"seccomp: unsupported platform {platform.machine()}")
    audit_arch, table = arch
    unknown = names - X86_64_SYSCALLS.keys() - AARCH64_SYSCALLS.keys()
    if unknown:
        raise ValueError(f"unknown syscalls: {', '.join(sorted(unknown))}")
    deny = SECCOMP_RET_ERRNO | (errno & SECCOMP_RET_DATA)

    # Every comparison jumps over at most a few instructions, however long the list: BPF
    # jump offsets are 8 bits.
    prog = [
        _insn(_BPF_LD_W_ABS, _OFFSET_ARCH),
        _insn(_BPF_JEQ_K, audit_arch, jt=1),
        # Syscall numbers mean other things under another ABI (i386 through int 0x80).
        _insn(_BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        _insn(_BPF_LD_W_ABS, _OFFSET_NR),
    ]
    if audit_arch == _ARCHES["x86_64"][0]:
        prog += [_insn(_BPF_JGE_K, X32_SYSCALL_BIT, jf=1), _insn(_BPF_RET_K, deny)]
    for nr in sorted({table[name] for name in names if name in table}):
        prog += [_insn(_BPF_JEQ_K, nr, jf=1), _insn(_BPF_RET_K, deny)]
    prog += [
        # A seccomp filter cannot read clone3's flags (they sit behind a pointer); ENOSYS makes
        # glibc fall back to clone, whose flags it can read. Docker's default profile does this.
        _insn(_BPF_JEQ_K, table["clone3"], jf=1),
        _insn(_BPF_RET_K, SECCOMP_RET_ERRNO | _errno.ENOSYS),
        _insn(_BPF_JEQ_K, table["clone"], jf=3),
        _insn(_BPF_LD_W_ABS, _OFFSET_ARG0_LOW),
        _insn(_BPF_JSET_K, CLONE_NAMESPACE_FLAGS, jf=1),
        _insn(_BPF_RET_K, deny),
        _insn(_BPF_RET_K, SECCOMP_RET_ALLOW),
    ]
    return b"".join(prog)


def install_filter(denied: Iterable[str] = DENIED_SYSCALLS, errno: int = _errno.EPERM) -> None:
    """Deny ``denied`` (syscall names) to the calling process, its threads and its children.

    A denied syscall, and clone(2) with a namespace flag, fail with ``errno``; clone3(2) fails
    with ENOSYS; a syscall of a foreign ABI kills the process. Names that do not exist on this
    architecture are skipped; names unknown to this module raise ValueError. Irreversible.
    """
    code = build_program(denied, errno)
    libc = _libc()
    # Required to install a filter without CAP_SYS_ADMIN, and keeps setuid binaries from
    # running with the filter they could be confused by.
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _raise("prctl(PR_SET_NO_NEW_PRIVS)")
    buffer = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    # TSYNC applies the filter to every thread of the process, not just the calling one: the
    # runtime may have started threads before user code is imported.
    _, table = _ARCHES[platform.machine()]
    result = libc.syscall(
        ctypes.c_long(table["seccomp"]),
        ctypes.c_ulong(SECCOMP_SET_MODE_FILTER),
        ctypes.c_ulong(SECCOMP_FILTER_FLAG_TSYNC),
        ctypes.byref(prog),
    )
    if result > 0:
        raise SeccompError(
            _errno.EBUSY, f"seccomp: thread {result} runs another filter and cannot be synced"
        )
    if result < 0:
        if ctypes.get_errno() != _errno.ENOSYS:
            _raise("seccomp(SECCOMP_SET_MODE_FILTER)")
        # Kernels before 3.17 have no seccomp(2): filter this thread only.
        if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
            _raise("prctl(PR_SET_SECCOMP)")


def _raise(call: str) -> NoReturn:
    err = ctypes.get_errno()
    raise SeccompError(err, f"seccomp: {call} failed: {os.strerror(err)}")
