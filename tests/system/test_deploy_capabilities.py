"""The capabilities deploy/systemd/fissile.service leaves fissile (CapabilityBoundingSet, with
NoNewPrivileges) are enough for the whole sandbox: `fissile up --sandbox strict` starts, runs a
function with its own uid, network namespace and secrets, builds a package in its sandbox, and
stops every instance on SIGTERM."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import syskit
from syskit import Platform, write

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "fissile.service"
# Capability numbers (linux/capability.h), to read /proc/<pid>/status.
_NUMBERS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_KILL": 5,
            "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
            "CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21}  # fmt: skip

pytestmark = pytest.mark.skipif(
    (os.geteuid() != 0 or not shutil.which("setpriv")) and os.environ.get("CI") != "true",
    reason="needs root and util-linux's setpriv to run fissile with fewer capabilities",
)


def unit_capabilities() -> list[str]:
    (line,) = re.findall(r"^CapabilityBoundingSet=(.*)$", UNIT.read_text(), re.MULTILINE)
    return line.split()


def test_the_units_capabilities_run_the_strict_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    capabilities = unit_capabilities()
    bounding = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in capabilities)])
    # `fissile` as the unit runs it: the bounding set, no inheritable caps, no new privileges.
    wrapper = write(
        tmp_path / "fissile-confined",
        "#!/bin/sh\nexec setpriv --no-new-privs --inh-caps=-all "
        f'--bounding-set={bounding} {syskit.FISSILE} "$@"\n',
    )
    wrapper.chmod(0o755)
    monkeypatch.setattr(syskit, "FISSILE", wrapper)
    running = Platform(tmp_path / "data", ("--sandbox", "strict"))
    try:
        running.start()
        status = Path(f"/proc/{running.pid}/status").read_text()
        (bounding_mask,) = re.findall(r"^CapBnd:\s*([0-9a-f]+)$", status, re.MULTILINE)
        assert int(bounding_mask, 16) == sum(1 << _NUMBERS[c] for c in capabilities)
        assert re.search(r"^NoNewPrivs:\s*1$", status, re.MULTILINE)

        write(tmp_path / "k", "the-value")
        write(
            tmp_path / "who.py",
            # The router is on the host's loopback: out of reach from a network namespace.
            "import os, socket\n"
            "def main(request):\n"
            "    try:\n"
            f"        socket.create_connection(('127.0.0.1', {running.port}), timeout=1)\n"
            "        reach = 'yes'\n"
            "    except OSError:\n"
            "        reach = 'no'\n"
            "    return {'uid': os.getuid(), 'host': os.uname().nodename, 'network': reach,\n"
            "            'secret': open('/secrets/default/creds/k').read()}\n",
        )
        running.ok("secret", "create", "--name", "creds", "--from-file", f"k={tmp_path / 'k'}")
        running.ok("fn", "create", "--name", "who", "--code", str(tmp_path / "who.py"),
                   "--secret", "creds", "--network", "none")  # fmt: skip
        answer = running.get("/function/who", timeout=60)
        assert answer.status_code == 200, answer.text
        seen = answer.json()
        assert seen["uid"] >= 100000 and seen["host"] == "who", seen
        assert seen["network"] == "no" and seen["secret"] == "the-value", seen

        source = tmp_path / "src"
        source.mkdir()
        write(source / "built.py", "def main(request):\n    return open('marker').read()\n")
        write(source / "build.sh", '#!/bin/sh\ncp -r "$SRC_PKG" "$DEPLOY_PKG"\n'
              'id -u > "$DEPLOY_PKG/marker"\n')  # fmt: skip
        (source / "build.sh").chmod(0o755)
        running.ok("pkg", "create", "--name", "built", "--env", "python", "--src", str(source),
                   "--buildcmd", "./build.sh", "--wait")  # fmt: skip
        running.ok("fn", "create", "--name", "built", "--pkg", "built", "--entrypoint",
                   "built.main")  # fmt: skip
        answer = running.get("/function/built", timeout=60)
        assert answer.status_code == 200, answer.text
        # The build ran as its own unprivileged uid.
        assert int(answer.text) != 0, answer.text

        running.stop_cleanly()
        assert "DEGRADED" not in running.stderr()
    finally:
        running.abandon()
