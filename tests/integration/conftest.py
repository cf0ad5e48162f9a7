"""Fixtures of the integration tests: real SQLite files, zygotes, unix sockets and pip."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from intkit import Harness

from fissile.models import EnvironmentSpec


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
