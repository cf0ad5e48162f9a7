"""prctl(2) through ctypes; Linux only, a no-op elsewhere."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15

_libc = (
    ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if sys.platform == "linux"
    else None
)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent exits."""
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def set_process_name(name: str) -> None:
    """Name the process in ``ps`` / ``top`` (up to 15 bytes)."""
    if _libc is not None:
        _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
