"""Linux namespaces for an instance: its own PID, mount, IPC and UTS namespaces, and, for
``--network none``, its own network namespace with only a loopback interface."""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from collections.abc import Callable

from fissile.sandbox._libc import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUTS,
    setns,
    unshare,
)

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

PRIVATE_NAMESPACES = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS


class PidNamespaceForker:
    """Forks children that each start a PID namespace of their own (as its PID 1).

    ``unshare(CLONE_NEWPID)`` only affects the caller's *future* children and may not be called
    twice in a row, so the zygote joins its own namespace back (``setns``) after each fork; then
    the next fork can start a fresh one. When an instance's PID 1 exits, the kernel kills every
    process left in its namespace: nothing the function started outlives it.
    """

    def __init__(self) -> None:
        self._own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self._own)

    def fork(self, child: Callable[[], None]) -> int:
        unshare(CLONE_NEWPID)
        try:
            pid = os.fork()
        except BaseException:
            setns(self._own, CLONE_NEWPID)
            raise
        if pid == 0:
            os.close(self._own)
            child()
            os._exit(0)
        setns(self._own, CLONE_NEWPID)
        return pid


def private_namespaces() -> None:
    """Give the calling process its own mount, IPC and UTS namespaces."""
    unshare(PRIVATE_NAMESPACES)


def isolate_network() -> None:
    """Move the calling process into a new network namespace with loopback up, nothing else."""
    unshare(CLONE_NEWNET)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | _IFF_UP))
