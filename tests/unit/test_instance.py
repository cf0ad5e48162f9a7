"""fissile/executor/instance.py: exit descriptions and the state an instance keeps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from fissile.executor.instance import Instance, State, describe_exit


def wait_status(code: str) -> int:
    process = subprocess.Popen([sys.executable, "-c", code])
    _, status = os.waitpid(process.pid, 0)
    process.returncode = 0  # reaped here
    return status


def test_describe_exit_status() -> None:
    assert describe_exit(wait_status("import os; os._exit(3)")) == "exited with status 3"
    assert describe_exit(wait_status("pass")) == "exited with status 0"


def test_describe_signal() -> None:
    status = wait_status("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert describe_exit(status) == f"killed by signal {signal.SIGKILL.value} (SIGKILL)"
    status = wait_status("import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert describe_exit(status) == f"killed by signal {signal.SIGTERM.value} (SIGTERM)"


def test_mark_exited_keeps_the_first_reason() -> None:
    instance = Instance("i1", "python", "/nonexistent.sock", "token")
    assert instance.alive and instance.state is State.warm
    instance.kill("timeout after 1s")  # pid 0: nothing to signal
    instance.mark_exited(9)
    assert instance.exit_reason == "timeout after 1s"
    assert instance.state is State.dead and not instance.alive
    assert instance.exited.is_set()
    other = Instance("i2", "python", "/nonexistent.sock", "token")
    other.mark_exited(3 << 8)
    assert other.exit_reason == "exited with status 3"
    assert repr(other) == "<Instance i2 pid=0 dead fn=None>"
