"""Fixtures of the integration tests: real SQLite files, zygotes, unix sockets and pip."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from intkit import Harness
from pgkit import fresh_schema

from fissile.models import EnvironmentSpec
from fissile.store import Store, open_store


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


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty store of each kind: a new SQLite file, a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'db' / 'fissile.db'}"
        return
    with fresh_schema() as url:
        yield url


@pytest.fixture
def any_store(store_url: str) -> Iterator[Store]:
    """An open store of each kind (``store_url``): the protocol tests' subject."""
    store = open_store(store_url)
    yield store
    store.close()
