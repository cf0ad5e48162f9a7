"""PostgreSQL for the tests: a fresh schema per test in the ``test`` database on loopback.

A missing server skips the test with the reason, except under ``CI=true`` where it fails: CI
runs PostgreSQL. ``FISSILE_TEST_POSTGRES`` names another server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest

URL = os.environ.get("FISSILE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _absent(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


def in_schema(url: str, schema: str) -> str:
    """``url`` with every session's search_path set to ``schema``."""
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A URL whose sessions use a new, empty schema; the schema is dropped afterwards."""
    try:
        import psycopg
    except ImportError:
        _absent("psycopg is not installed")
        raise
    name = f"t_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        _absent(f"no PostgreSQL at {URL}: {exc}")
        raise
    with admin:
        admin.execute(f'CREATE SCHEMA "{name}"'.encode())
        try:
            yield in_schema(URL, name)
        finally:
            admin.execute(f'DROP SCHEMA "{name}" CASCADE'.encode())
