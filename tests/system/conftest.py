"""Fixtures of the system tests (helpers are in ``syskit``): platforms started as subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from syskit import Platform, Spawn


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The platform most tests share; each test uses its own function names."""
    running = Platform(tmp_path_factory.mktemp("shared") / "data").start()
    yield running
    try:
        running.stop_cleanly()
        assert "Traceback" not in running.stderr(), running.stderr()[-5000:]
    finally:
        running.abandon()


@pytest.fixture
def spawn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spawn]:
    """``spawn(data_dir=None, *extra_args, cwd=None)`` starts a dedicated platform for one test; any
    still running when the test ends is killed (by its pid)."""
    started: list[Platform] = []

    def start(data_dir: Path | None = None, *extra_args: str, cwd: Path | None = None) -> Platform:
        if data_dir is None:
            data_dir = tmp_path_factory.mktemp("dedicated") / "data"
        running = Platform(data_dir, extra_args, cwd)
        started.append(running)
        return running.start()

    yield start
    for running in started:
        running.abandon()
