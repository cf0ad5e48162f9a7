"""What the instance runtime does to keep its private memory small: finding the modules a
function's import added without walking all of sys.modules, handing back zeroed pages,
and the zygote's rehearsal of the serving path."""

from __future__ import annotations

import ctypes
import mmap
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fissile.runtime import _pages
from fissile.runtime._pages import release_zero_pages
from fissile.runtime.server import _modules_mark, _modules_since

pytestmark = pytest.mark.usefixtures("isolated_import")


def _write_modules(root: Path, *names: str) -> None:
    for name in names:
        (root / f"{name}.py").write_text(f"VALUE = {name!r}\n")
    sys.path.insert(0, str(root))


def test_modules_since_names_what_an_import_added(tmp_path: Path) -> None:
    _write_modules(tmp_path, "fxmem_a", "fxmem_b")
    (tmp_path / "fxmem_top.py").write_text("import fxmem_a, fxmem_b\n")
    mark = _modules_mark()
    __import__("fxmem_top")
    assert sorted(_modules_since(mark)) == ["fxmem_a", "fxmem_b", "fxmem_top"]


def test_modules_since_nothing_added() -> None:
    assert _modules_since(_modules_mark()) == []


def test_modules_since_survives_the_newest_module_being_removed(tmp_path: Path) -> None:
    _write_modules(tmp_path, "fxmem_old", "fxmem_new")
    __import__("fxmem_old")
    mark = _modules_mark()
    assert mark[1] == "fxmem_old"
    del sys.modules["fxmem_old"]
    __import__("fxmem_new")
    names = _modules_since(mark)
    assert "fxmem_new" in names
    assert len(names) == len(sys.modules)  # walked to the start: more names, none missing


def test_modules_since_survives_the_newest_module_moving_to_the_end(tmp_path: Path) -> None:
    _write_modules(tmp_path, "fxmem_moved", "fxmem_added")
    __import__("fxmem_moved")
    mark = _modules_mark()
    moved = sys.modules.pop("fxmem_moved")
    __import__("fxmem_added")
    sys.modules["fxmem_moved"] = moved  # the same module, now the newest entry
    assert "fxmem_added" in _modules_since(mark)


def _resident(address: int, pages: int) -> list[bool]:
    """Whether each page from ``address`` is in memory (/proc/self/pagemap, bit 63)."""
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(address // mmap.PAGESIZE * 8)
        entries = struct.unpack(f"{pages}Q", pagemap.read(pages * 8))
    return [bool(entry >> 63) for entry in entries]


@pytest.mark.skipif(_pages._madvise is None, reason="Linux only")
def test_release_zero_pages_keeps_contents_and_drops_zero_pages() -> None:
    page = mmap.PAGESIZE
    region = mmap.mmap(-1, 8 * page, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        region.write(b"\0" * (8 * page))  # touch every page
        region[2 * page + 7] = 1
        region[5 * page] = 2
        pointer = ctypes.c_char.from_buffer(region)
        base = ctypes.addressof(pointer)
        del pointer
        before = bytes(region)
        assert _resident(base, 8) == [True] * 8
        # An unaligned start and end: only whole pages inside the range are candidates.
        released = release_zero_pages(base + 10, 8 * page - 20)
        assert released == 4 * page  # pages 1, 3, 4 and 6; 0 and 7 are partial
        kept = [True, False, True, False, False, True, False, True]
        assert _resident(base, 8) == kept
        assert bytes(region) == before
        region[3 * page] = 9  # a released page is writable as before
        assert region[3 * page] == 9
    finally:
        region.close()


def test_release_zero_pages_of_nothing() -> None:
    assert release_zero_pages(4096, 0) == 0
    assert release_zero_pages(4097, 4000) == 0


def test_rehearse_serving_leaves_no_thread_loop_or_socket() -> None:
    """Run in a fresh interpreter, as in the zygote: fork() must stay safe afterwards."""
    script = textwrap.dedent(
        """
        import asyncio, os, threading
        from fissile.runtime.server import rehearse_serving
        fds = set(os.listdir("/proc/self/fd"))
        rehearse_serving()
        left = set(os.listdir("/proc/self/fd")) - fds
        kinds = sorted(os.readlink(f"/proc/self/fd/{fd}").split(":")[0]
                       for fd in left if os.path.exists(f"/proc/self/fd/{fd}"))
        assert threading.active_count() == 1, threading.enumerate()
        assert len(os.listdir("/proc/self/task")) == 1
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise AssertionError("a running loop")
        assert asyncio.get_event_loop_policy()._local._loop is None
        print(kinds)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    # libuv's signal pipe (one per process; a forked child makes its own) and nothing else.
    assert result.stdout.strip() in ("[]", "['pipe', 'pipe']")
