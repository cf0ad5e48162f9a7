"""The import cache under the full sandbox (``--sandbox strict``): functions importing a library
of the environment's Python fork from a package zygote that already imported it, and are still
confined exactly like the others (own PID namespace, /function, a per-function uid)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from syskit import Platform, descendants, write

pytestmark = pytest.mark.slow  # a dedicated strict platform: ~2 s

USES_YAML = """
import os, sys
CACHED = "yaml" in sys.modules
import yaml

def main(request):
    return {
        "cached": CACHED,
        "pid": os.getpid(),
        "uid": os.getuid(),
        "cwd": os.getcwd(),
        "dump": yaml.safe_dump({"a": 1}).strip(),
    }
"""


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    platform = Platform(tmp_path_factory.mktemp("imports") / "data", ("--sandbox", "strict"))
    platform.start()
    yield platform
    try:
        platform.stop_cleanly()
    finally:
        platform.abandon()


def test_sandboxed_functions_fork_from_a_package_zygote(strict: Platform, tmp_path: Path) -> None:
    answers = []
    for name in ("yaml-one", "yaml-two"):
        path = write(tmp_path / f"{name}.py", USES_YAML + f"# {name}\n")
        strict.ok("fn", "create", "--name", name, "--code", str(path))
        response = strict.get(f"/function/{name}", timeout=30.0)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    for answer in answers:
        assert answer["cached"] is True
        assert answer["pid"] == 1  # PID 1 of its own namespace, as every instance
        assert answer["uid"] != 0
        assert answer["cwd"] == "/function"
        assert answer["dump"] == "a: 1"
    # On the host: both instances are children of one zygote, itself a child of the
    # environment's zygote.
    tree = descendants(strict.pid)
    # A child forked a moment ago still carries its parent's name until it renames itself, so
    # a package zygote is told by its parent: an environment's zygote (one not forked by another).
    zygotes = {pid: p for pid, p in tree.items() if p.comm.startswith("fz-")}
    environment_zygotes = {pid for pid, p in zygotes.items() if p.ppid not in zygotes}
    package_zygotes = [p for p in zygotes.values() if p.ppid in environment_zygotes]
    assert len(package_zygotes) == 1, zygotes
    children = [
        p for p in tree.values() if p.ppid == package_zygotes[0].pid and p.comm.startswith("fi-")
    ]
    assert len(children) >= 2, tree
    assert os.getpid() not in tree
