"""fissile's pytest plugin (registered through the ``pytest11`` entry point): the
``fissile_platform`` fixtures. It only declares fixtures, a marker and two ini options; nothing
starts until a test asks for a platform.

- ``fissile_platform`` (module scope): a platform shared by the session's tests that apply the
  same spec directory (``fissile_specdir``): started for the first test that asks for it,
  stopped at the end of the session. A ``conftest.py`` that names another directory gets a
  platform of its own, so several projects' tests run in one session.
- ``fissile_platform_fn``: a platform of the test's own, with the spec directory of its
  ``@pytest.mark.fissile_specs("dir")`` marker (relative to the test file) applied, or else
  ``fissile_specdir``'s.
- ``fissile_specdir``: the spec directory to apply; ``None`` unless the ``fissile_specs`` ini
  option names one (relative to the rootdir). Override it in a ``conftest.py`` to choose.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
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


def _started(
    config: pytest.Config, base: Path, specdir: Path | None
) -> Generator[Platform, None, None]:
    from fissile.testing._platform import Platform

    platform = Platform(base / "data", list(config.getini("fissile_up_args") or []))
    try:
        platform.start()
        if specdir is not None:
            platform.apply(specdir)
        yield platform
    finally:
        platform.stop()


class _Platforms:
    """The session's shared platforms, one per spec directory, started on first use."""

    def __init__(self, config: pytest.Config, factory: pytest.TempPathFactory) -> None:
        self.config = config
        self.factory = factory
        self.running: dict[Path | None, tuple[Platform, Generator[Platform, None, None]]] = {}

    def get(self, specdir: Path | None) -> Platform:
        key = specdir.resolve() if specdir is not None else None
        if key not in self.running:
            started = _started(self.config, self.factory.mktemp("fissile"), specdir)
            self.running[key] = (next(started), started)
        return self.running[key][0]

    def stop(self) -> None:
        for _, started in self.running.values():
            started.close()  # runs _started's finally: the platform stops
        self.running.clear()


@pytest.fixture(scope="session")
def _fissile_platforms(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Platforms]:
    platforms = _Platforms(pytestconfig, tmp_path_factory)
    try:
        yield platforms
    finally:
        platforms.stop()


@pytest.fixture(scope="module")
def fissile_platform(_fissile_platforms: _Platforms, fissile_specdir: Path | None) -> Platform:
    """A ``fissile.testing.Platform`` shared by the session's tests with this spec directory
    (looked up per module, so that each ``conftest.py``'s ``fissile_specdir`` is honoured and
    a module's own fixtures may use it)."""
    return _fissile_platforms.get(fissile_specdir)


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
