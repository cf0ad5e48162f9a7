"""students-courses' tests: the function's modules importable, the spec directory for the
platform fixtures, and PostgreSQL when the machine has one."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fissile.testing import Platform

EXAMPLE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(EXAMPLE / "school"))

POSTGRES = os.environ.get("SCHOOL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="module")
def fissile_platform() -> Iterator[Platform]:
    # Module scope, not the plugin's session: `make test` runs every example in one session,
    # each with its own spec directory.
    with Platform() as platform:
        platform.apply(EXAMPLE / "specs")
        yield platform


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL of the test PostgreSQL whose search path is a schema of this test's own
    (dropped afterwards). Skips when there is none, except under CI=true."""
    psycopg = pytest.importorskip("psycopg")
    schema = f"school_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError as exc:
        reason = f"no PostgreSQL at {POSTGRES}: {str(exc).strip().splitlines()[0]}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: the database tests must run)", pytrace=False)
        pytest.skip(reason)
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
