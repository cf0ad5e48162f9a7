"""jpeg2pdf's tests: the functions' modules importable, and the platform with the example's
specs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fissile.testing import Platform

EXAMPLE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(EXAMPLE / "functions"))


@pytest.fixture(scope="module")
def fissile_platform() -> Iterator[Platform]:
    # Module scope, not the plugin's session: `make test` runs every example in one session,
    # each with its own spec directory.
    with Platform() as platform:
        platform.apply(EXAMPLE / "specs")
        yield platform
