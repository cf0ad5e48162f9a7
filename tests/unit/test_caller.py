"""Executor.caller: which function a platform-socket peer (pid, uid from SO_PEERCRED) is."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

from fissile.executor import Executor
from fissile.sandbox import base_environment


def fake_executor(drop_uid: bool, by_pid: dict[int, Any], by_uid: dict[int, str]) -> Any:
    return SimpleNamespace(
        sandbox=SimpleNamespace(fork_config={"drop_uid": drop_uid}),
        _by_pid=by_pid,
        _function_by_uid=by_uid,
    )


def test_with_per_function_uids_the_uid_alone_decides() -> None:
    executor = fake_executor(True, {}, {100_123: "billing"})
    assert Executor.caller(executor, 42, 100_123) == "billing"
    assert Executor.caller(executor, 42, 0) is None  # the host's root is no function


def test_without_them_the_instance_or_an_ancestor_decides() -> None:
    # This test process plays the instance; a process it started calls.
    executor = fake_executor(False, {os.getpid(): SimpleNamespace(function="billing")}, {})
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert Executor.caller(executor, child.pid, os.getuid()) == "billing"
    finally:
        child.kill()
        child.wait()
    assert Executor.caller(executor, os.getppid(), os.getuid()) is None


def test_the_base_environment_keeps_only_what_runtimes_need() -> None:
    env = base_environment(
        {"PATH": "/bin", "LANG": "C.UTF-8", "AWS_SECRET_ACCESS_KEY": "x", "FISSILE_TOKEN": "t"}
    )
    assert env == {"PATH": "/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp"}
