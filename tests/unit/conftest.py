"""Fixtures of the unit tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest


@pytest.fixture
def isolated_import() -> Iterator[None]:
    """Undo what loading a function does to this process: the working directory, sys.path,
    the modules it imported and the environment variables it set."""
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
