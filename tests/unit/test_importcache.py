"""fissile/executor/importcache.py without processes: which imports make a cache key."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fissile.executor import importscan
from fissile.executor.importcache import ImportCache, private_memory
from fissile.executor.importscan import ScanError, imports_of, read_regular, scan_package


def env_with(modules: set[str]) -> Any:
    return SimpleNamespace(name="python", zygote=SimpleNamespace(modules=frozenset(modules)))


async def test_key_leaves_out_stdlib_environment_and_package_modules(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(
        "import json, os.path\nimport numpy\nimport flask\nimport helpers\nimport yaml\n"
    )
    (tmp_path / "helpers.py").write_text("import pandas\n")
    cache = ImportCache(executor=None)  # type: ignore[arg-type]
    key = await cache.key(env_with({"flask", "yaml"}), str(tmp_path))
    # json/os: standard library; flask/yaml: the environment's zygote has them; helpers: ours.
    assert key == ("numpy", "pandas")


async def test_key_is_empty_for_a_plain_function(tmp_path: Path) -> None:
    (tmp_path / "hello.py").write_text("import os\n\ndef main():\n    return 'hi'\n")
    cache = ImportCache(executor=None)  # type: ignore[arg-type]
    assert await cache.key(env_with(set()), str(tmp_path)) == ()


async def test_a_package_is_scanned_once(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("import numpy\n")
    cache = ImportCache(executor=None)  # type: ignore[arg-type]
    assert await cache.key(env_with(set()), str(tmp_path)) == ("numpy",)
    (tmp_path / "main.py").write_text("import scipy\n")  # deploy dirs never change
    assert await cache.key(env_with(set()), str(tmp_path)) == ("numpy",)


def test_private_memory_of_this_process_and_of_none() -> None:
    assert private_memory(os.getpid()) > 0
    assert private_memory(0) == 0


async def test_a_package_past_a_scan_bound_gets_no_zygote_and_is_not_scanned_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importscan, "MAX_PACKAGE_BYTES", 100)
    (tmp_path / "main.py").write_text("import numpy\n" + "#" * 200 + "\n")
    cache = ImportCache(executor=None)  # type: ignore[arg-type]
    assert await cache.key(env_with(set()), str(tmp_path)) == ()
    monkeypatch.setattr(importscan, "MAX_PACKAGE_BYTES", 10**6)
    # Deploy dirs never change: the verdict stands.
    assert await cache.key(env_with(set()), str(tmp_path)) == ()


# --- the scanner: every read bounded -------------------------------------------------------


def test_imports_found_by_the_tokenizer() -> None:
    source = b"""
import a.b as c, d
from e.f import (g,
    h)
from . import rel
from .x import y
if True:
    import i; from j import k
def f():
    import l  # a comment
s = "import not_this"
x = 1; import m
"""
    assert imports_of(source) == {"a", "d", "e", "i", "j", "l", "m"}
    assert imports_of(b"import ok\nthis is not (python\n") == {"ok"}


def test_the_scanner_never_follows_a_symlink_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("import secret_module\n")
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "main.py").write_text("import numpy\n")
    (package / "evil.py").symlink_to("/dev/zero")
    (package / "out.py").symlink_to(outside)
    (package / "sub" / "x.py").symlink_to("../../outside.py")
    (package / "linked").symlink_to(tmp_path)  # a directory outside: not descended
    info = package / "evil-1.0.dist-info"
    info.mkdir()
    (info / "top_level.txt").symlink_to("/dev/zero")
    (package / "mylib").symlink_to("sub")  # a linked module is still the package's own
    imports, provided = scan_package(str(package))
    assert imports == {"numpy"}
    assert {"main", "sub", "mylib", "out"} <= provided


def test_the_scanner_reads_only_regular_files(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("import numpy\n")
    os.mkfifo(tmp_path / "fifo.py")  # opened for reading, a FIFO would block the scan
    if os.geteuid() == 0:
        os.mknod(tmp_path / "zero.py", 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    imports, _ = scan_package(str(tmp_path))
    assert imports == {"numpy"}


def test_a_huge_file_is_skipped_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importscan, "MAX_FILE_SIZE", 1000)
    (tmp_path / "main.py").write_text("import numpy\n")
    (tmp_path / "huge.py").write_text("import pandas\n" + "#" * 2000 + "\n")
    directory = os.open(tmp_path, os.O_RDONLY)
    try:
        assert read_regular("huge.py", directory, 1000) is None
        assert read_regular("main.py", directory, 1000) == b"import numpy\n"
    finally:
        os.close(directory)
    imports, _ = scan_package(str(tmp_path))
    assert imports == {"numpy"}


def test_the_scan_stops_at_the_package_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importscan, "MAX_PACKAGE_BYTES", 1000)
    for n in range(3):
        (tmp_path / f"m{n}.py").write_text("import numpy\n" + "#" * 400 + "\n")
    with pytest.raises(ScanError, match="MiB of source"):
        scan_package(str(tmp_path))
    monkeypatch.setattr(importscan, "MAX_PACKAGE_BYTES", 10**6)
    monkeypatch.setattr(importscan, "MAX_FILES", 2)
    with pytest.raises(ScanError, match="more than 2 source files"):
        scan_package(str(tmp_path))
