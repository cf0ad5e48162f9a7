"""The Kubernetes container's entrypoint (deploy/kubernetes/base/entrypoint.yaml) on a real
cgroup v2 hierarchy, seen as a container sees it: its own group at /sys/fs/cgroup, through a
cgroup namespace. The script must leave that group without processes, so that fissile may
enable controllers for the groups it makes there, and then run `fissile` with its arguments."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ENTRYPOINT = (
    Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "base" / "entrypoint.yaml"
)
# Where the kernel's cgroup v2 hierarchy is mounted: alone, or beside v1 on a hybrid host.
V2_MOUNTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
# Stands in for fissile: reports where it runs, then does what fissile's cgroup setup does
# first (fissile/sandbox/cgroups.py): enable each offered controller for its own groups.
FAKE_FISSILE = """#!/bin/sh
echo "args: $*"
echo "cgroup: $(grep '^0::' /proc/self/cgroup)"
echo "left in the root: $(wc -l < /sys/fs/cgroup/cgroup.procs)"
for controller in $(cat /sys/fs/cgroup/cgroup.controllers); do
    echo "+$controller" > /sys/fs/cgroup/cgroup.subtree_control && echo "enabled: $controller"
done
"""


def _v2_root() -> Path | None:
    for mount in V2_MOUNTS:
        if (mount / "cgroup.controllers").is_file() and os.access(mount, os.W_OK):
            return mount
    return None


@pytest.fixture
def container_group() -> Iterator[Path]:
    """A fresh cgroup v2 group, the container's; removed afterwards with what is under it."""
    root = _v2_root()
    if os.geteuid() != 0 or root is None or not shutil.which("unshare"):
        reason = "needs root, a writable cgroup v2 hierarchy and util-linux's unshare"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    group = root / f"fissile-deploy-test-{os.getpid()}"
    group.mkdir()
    try:
        yield group
    finally:
        deadline = time.monotonic() + 10
        for directory in (group / "supervisor", group):
            while directory.exists():
                try:
                    directory.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)  # the processes inside are still exiting


def test_the_entrypoint_empties_the_containers_group_then_runs_fissile(
    container_group: Path, tmp_path: Path
) -> None:
    (config,) = yaml.safe_load_all(ENTRYPOINT.read_text())
    script = tmp_path / "entrypoint.sh"
    script.write_text(config["data"]["entrypoint.sh"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "fissile").write_text(FAKE_FISSILE)
    (bin_dir / "fissile").chmod(0o755)

    # Into the container's group, then a cgroup namespace rooted there with cgroupfs mounted
    # at /sys/fs/cgroup in a mount namespace of its own, as a container runtime does.
    container = (
        f"echo $$ > {container_group}/cgroup.procs && exec unshare --cgroup --mount --fork sh -c "
        f'"mount -t cgroup2 none /sys/fs/cgroup && PATH={bin_dir}:\\$PATH exec sh {script} '
        f'up --data-dir /var/lib/fissile"'
    )
    completed = subprocess.run(
        ["unshare", "--mount", "--fork", "sh", "-c", container],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0] == "args: up --data-dir /var/lib/fissile", completed.stdout
    assert lines[1] == "cgroup: 0::/supervisor", completed.stdout
    assert lines[2] == "left in the root: 0", completed.stdout
    offered = (container_group / "cgroup.controllers").read_text().split()
    assert sorted(line.split(": ")[1] for line in lines[3:]) == sorted(offered), completed
