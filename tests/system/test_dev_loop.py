"""``fissile dev`` driven as a user would: started in a project directory, a function curled,
its file edited and saved, the new answer seen with the request printed, the other function
left running as it was, and Ctrl-C (SIGINT) leaving nothing running and no data dir behind."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from syskit import descendants, free_port, spawned_by, wait_for, wait_gone, write

pytestmark = pytest.mark.slow  # its own platform, two rollouts: about 10 s

SPECS = """
apiVersion: fissile.dev/v1
kind: DeploymentConfig
name: devloop
id: 00000000-devloop-tests
---
apiVersion: fissile.dev/v1
kind: Function
name: greet
code: ../greet.py
---
apiVersion: fissile.dev/v1
kind: Function
name: steady
code: ../steady.py
---
apiVersion: fissile.dev/v1
kind: HTTPTrigger
name: greet
function: greet
url: /greet
"""

GREET = """
def main(request):
    print("greeting", request.query.get("who"), flush=True)
    return "{word} " + request.query.get("who", "nobody")
"""

STEADY = """
import uuid

LOADED = uuid.uuid4().hex  # once per instance: a rolled function answers another

def main(request):
    return LOADED
"""


class Output:
    """What the command printed so far, read as it goes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(target=lambda: self.lines.extend(stream), daemon=True).start()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def has(self, pattern: str) -> bool:
        return re.search(pattern, self.text, re.MULTILINE | re.DOTALL) is not None


def test_save_and_call(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(project / "specs" / "app.yaml", SPECS)
    greet = write(project / "greet.py", GREET.replace("{word}", "hello"))
    write(project / "steady.py", STEADY)
    port, api_port = free_port(), free_port()
    router = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "fissile", "dev", "--port", str(port), "--api-port", str(api_port)],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    output = Output(process)
    try:

        def answer(path: str) -> str | None:
            try:
                response = httpx.get(router + path, timeout=10)
            except httpx.HTTPError:
                return None
            return response.text if response.status_code == 200 else None

        wait_for(lambda: output.has("^watching "), 120, "fissile dev ready")
        assert answer("/greet?who=ann") == "hello ann"
        steady = answer("/function/steady")
        assert steady

        greet.write_text(GREET.replace("{word}", "goodbye"))
        wait_for(lambda: answer("/greet?who=bob") == "goodbye bob", 60, "the new answer")
        # The request, and what the function printed, in the terminal.
        wait_for(
            lambda: (
                output.has(r"^changed: greet\.py$.*GET /greet -> 200 fn=greet")
                and output.has(r"^changed: greet\.py$.*greet \| greeting bob$")
            ),
            30,
            "the request and the function's output printed",
        )
        assert output.has(r"^changed: greet\.py$")
        assert output.has(r"^updated package 'greet-code' \(source\)$")
        # Only the changed function rolled: the other one's instance answers as before.
        assert answer("/function/steady") == steady
        assert not output.has(r"steady[^\n]*rolling")

        # A mistake in a spec is printed, and the loop goes on.
        broken = write(project / "specs" / "broken.yaml", "kind: Function\nname: x\ncode: 3\n")
        wait_for(lambda: output.has("^nothing applied: fix the specs"), 60, "the spec error")
        broken.unlink()
        wait_for(lambda: output.has("^nothing applied.*^no change to apply$"), 60, "a clean apply")

        data_dir = re.search(r"FISSILE_DATA_DIR=(\S+)", output.text)
        assert data_dir is not None
        # The platform, and its zygotes and instances (which may not be its descendants).
        running = list(descendants(process.pid).values())
        running += [spawned for proc in running for spawned in spawned_by(proc.pid)]
        assert running
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- fissile dev ---\n{output.text}") from None
    finally:
        process.send_signal(signal.SIGINT)
        try:
            status = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert status == 0, output.text
    assert wait_gone(running, 20) == []
    assert not Path(data_dir.group(1)).exists()
    assert output.lines[-1] == "stopped\n"
