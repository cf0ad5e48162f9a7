"""The zygote's preparation of its heap for forking (fissile/executor/_zygote.py): its holes
filled, so that what is allocated after a fork lands in pages no other process shares."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import gc
    from fissile.executor import _zygote
    gc.collect()
    before = _zygote._free_blocks()
    _zygote._fill_pools()
    after = _zygote._free_blocks()
    print(len(before), sum(before.values()), sum(after.values()), len(_zygote._PLUGS))
    """
)


def _run(**env: str) -> list[int]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    return [int(field) for field in result.stdout.split()]


def test_fill_pools_takes_up_the_free_blocks_of_partly_used_pools() -> None:
    classes, before, after, plugs = _run()
    assert classes == 32  # pymalloc's size classes, 16 to 512 bytes
    assert plugs >= before - after > 0
    # What is left is mostly the never-used tail of the pool each class allocates from
    # last (at most a pool's worth of 16-byte blocks, 1,020, for the smallest class).
    assert after < before


def test_fill_pools_without_pymalloc_does_nothing() -> None:
    assert _run(PYTHONMALLOC="malloc") == [0, 0, 0, 0]


MALLOC_SCRIPT = textwrap.dedent(
    """
    import ctypes, gc
    from fissile.executor import _zygote
    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in _zygote._MALLINFO2_FIELDS]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Mallinfo2
    # Free chunks scattered through the heap, as a zygote's imports leave them.
    keep = [bytearray(600 + i % 7 * 100) for i in range(3000)]
    del keep[::2]
    gc.collect()
    before = libc.mallinfo2()
    _zygote._fill_malloc()
    after = libc.mallinfo2()
    print(before.fordblks - before.keepcost, after.fordblks - after.keepcost, after.ordblks)
    """
)


def test_fill_malloc_takes_up_the_free_chunks() -> None:
    result = subprocess.run(
        [sys.executable, "-c", MALLOC_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    before, after, chunks = (int(field) for field in result.stdout.split())
    assert before > 500_000  # ~1,500 freed chunks of 600-1,200 bytes
    assert after < before // 10
    assert chunks < 20  # the top of the heap, and a few small remainders


def test_fill_heap_without_stderr_fills_what_it_can() -> None:
    """sys._debugmallocstats reports on file descriptor 2: without one, pymalloc's pools are
    left as they are, and the zygote still starts."""
    script = textwrap.dedent(
        """
        import os
        os.close(2)
        from fissile.executor import _zygote
        _zygote._fill_heap()
        print(len(_zygote._PLUGS), len(_zygote._CHUNKS) > 0)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout.split() == ["0", "True"]
