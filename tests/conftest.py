"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest


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
