"""Fixtures of the integration tests: real SQLite files, zygotes, unix sockets and pip."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from intkit import Harness

from fissile.models import EnvironmentSpec


@pytest.fixture
def isolated_import() -> Iterator[None]:
    """Undo what loading a function in this process does: working directory, sys.path,
    imported modules and environment variables."""
    cwd = os.getcwd()
    path = list(sys.path)
    modules = set(sys.modules)
    environ = dict(os.environ)
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            del sys.modules[name]
        os.environ.clear()
        os.environ.update(environ)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """An executor with the built-in ``python`` environment (one warm instance) started."""
    env = EnvironmentSpec(name="python", poolsize=1)
    started = Harness(tmp_path)
    started.store.create("environments", "python", env.model_dump(mode="json"))
    try:
        await started.executor.start()
        yield started
    finally:
        await started.stop()
        started.logs.close()
        started.store.close()
