"""Giving back pages an instance wrote but holds nothing in.

An instance's private memory is the pages it wrote after the fork. A page of private anonymous
memory that holds only zeros can be handed back to the kernel (``madvise(MADV_DONTNEED)``): the
next read maps the shared zero page and the next write a fresh page, so nothing the process sees
changes. Linux only; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from typing import Any

MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE


def _bind(libc: ctypes.CDLL, name: str, argtypes: tuple[Any, ...]) -> Any:
    function = getattr(libc, name)
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


# Bound once, in the zygote: looking a function up on a CDLL creates (and caches) a function
# pointer type, which each instance would otherwise write for itself.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_madvise = _libc and _bind(_libc, "madvise", (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int))
_memcmp = _libc and _bind(_libc, "memcmp", (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t))
# Compared against without copying anything: a copy of each page would be written, too.
_ZERO = ctypes.create_string_buffer(_PAGE)


def release_zero_pages(address: int, size: int) -> int:
    """Hand back the whole pages of ``[address, address + size)`` that hold only zeros; the
    range must be private anonymous memory (the heap, malloc's mappings) that no other thread
    is writing. Returns the number of bytes released."""
    if not _madvise or not _memcmp or size <= 0:
        return 0
    first = -(-address // _PAGE) * _PAGE
    end = (address + size) // _PAGE * _PAGE
    released = 0
    run = first
    for page in range(first, end + _PAGE, _PAGE):
        if page < end and _memcmp(page, _ZERO, _PAGE) == 0:
            continue
        if page > run and _madvise(run, page - run, MADV_DONTNEED) == 0:
            released += page - run
        run = page + _PAGE
    return released
