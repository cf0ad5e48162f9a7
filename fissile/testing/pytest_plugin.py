"""fissile's pytest plugin (registered through the ``pytest11`` entry point): the
``fissile_platform`` fixtures. It only declares fixtures, a marker and two ini options; nothing
starts until a test asks for a platform.

- ``fissile_platform``: one platform for the whole session, with ``fissile_specdir`` applied.
- ``fissile_platform_fn``: a platform of the test's own, with the spec directory of its
  ``@pytest.mark.fissile_specs("dir")`` marker (relative to the test file) applied, or else
  ``fissile_specdir``'s.
- ``fissile_specdir``: the spec directory to apply; ``None`` unless the ``fissile_specs`` ini
  option names one (relative to the rootdir). Override it in a ``conftest.py`` to choose.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from fissile.testing._platform import Platform


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("fissile_specs", "spec directory the fissile_platform fixtures apply", default="")
    parser.addini("fissile_up_args", "more `fissile up` options for fissile_platform", type="args")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fissile_specs(path): the spec directory fissile_platform_fn applies"
    )


@pytest.fixture(scope="session")
def fissile_specdir(pytestconfig: pytest.Config) -> Path | None:
    """The spec directory the platform fixtures apply (``None``: none)."""
    named = str(pytestconfig.getini("fissile_specs") or "")
    return pytestconfig.rootpath / named if named else None


def _started(config: pytest.Config, base: Path, specdir: Path | None) -> Iterator[Platform]:
    from fissile.testing._platform import Platform

    platform = Platform(base / "data", list(config.getini("fissile_up_args") or []))
    try:
        platform.start()
        if specdir is not None:
            platform.apply(specdir)
        yield platform
    finally:
        platform.stop()


@pytest.fixture(scope="session")
def fissile_platform(
    pytestconfig: pytest.Config,
    tmp_path_factory: pytest.TempPathFactory,
    fissile_specdir: Path | None,
) -> Iterator[Platform]:
    """A ``fissile.testing.Platform`` shared by the session's tests."""
    yield from _started(pytestconfig, tmp_path_factory.mktemp("fissile"), fissile_specdir)


@pytest.fixture
def fissile_platform_fn(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fissile_specdir: Path | None,
) -> Iterator[Platform]:
    """A ``fissile.testing.Platform`` of this test's own."""
    marker = request.node.get_closest_marker("fissile_specs")
    specdir = fissile_specdir
    if marker is not None:
        specdir = Path(request.node.path).parent / marker.args[0]
    yield from _started(request.config, tmp_path_factory.mktemp("fissile"), specdir)
