"""cart's tests: the function's module importable, Redis when the machine has one, and the
platform with the example's specs."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fissile.testing import Platform

EXAMPLE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(EXAMPLE / "functions"))
REDIS = os.environ.get("CART_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis; skips when there is none, except under CI=true."""
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS, socket_timeout=5).ping()
    except redis.RedisError as exc:
        reason = f"no Redis at {REDIS}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: the Redis tests must run)", pytrace=False)
        pytest.skip(reason)
    return REDIS


@pytest.fixture(scope="module")
def fissile_platform(redis_url: str) -> Iterator[Platform]:
    # Module scope, not the plugin's session: `make test` runs every example in one session,
    # each with its own spec directory.
    with Platform() as platform:
        platform.apply(EXAMPLE / "specs")
        yield platform
