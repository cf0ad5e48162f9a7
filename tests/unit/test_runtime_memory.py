"""What the instance runtime does to keep its private memory small: finding the modules a
function's import added without walking all of sys.modules."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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
