"""fissile/executor/importcache.py without processes: which imports make a cache key."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fissile.executor import importcache
from fissile.executor.importcache import ImportCache, private_memory


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


def flaky_parse(failures: int) -> Any:
    """ast.parse that first fails like CPython 3.11's racy AST recursion counter (gh-106905)."""
    real = importcache.ast.parse
    calls = {"n": 0}

    def parse(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise SystemError("AST constructor recursion depth mismatch (before=27, after=20)")
        return real(*args, **kwargs)

    return parse


async def test_a_racy_parse_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "main.py").write_text("import numpy\n")
    monkeypatch.setattr(importcache.ast, "parse", flaky_parse(importcache.PARSE_ATTEMPTS - 1))
    cache = ImportCache(executor=None)  # type: ignore[arg-type]
    assert await cache.key(env_with(set()), str(tmp_path)) == ("numpy",)


async def test_a_package_that_cannot_be_scanned_gets_no_zygote_and_is_scanned_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "main.py").write_text("import numpy\n")
    monkeypatch.setattr(importcache.ast, "parse", flaky_parse(importcache.PARSE_ATTEMPTS))
    cache = ImportCache(executor=None)  # type: ignore[arg-type]
    assert await cache.key(env_with(set()), str(tmp_path)) == ()
    # The failure is not remembered: the next load scans again.
    assert await cache.key(env_with(set()), str(tmp_path)) == ("numpy",)
