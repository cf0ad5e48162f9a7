"""deploy/systemd/fissile.service: a unit systemd accepts, whose ExecStart is a `fissile up` that
parses with its defaults and with the example environment file."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from fissile.cli.up import up

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
UNIT = DEPLOY / "fissile.service"
ENV_EXAMPLE = DEPLOY / "fissile.env.example"
CREDENTIALS = "/run/credentials/fissile.service"
# What fissile's sandbox needs, each found necessary by running fissile without it
# (docs/deploy.md); tests/system/test_deploy_capabilities.py runs fissile with only these.
CAPABILITIES = {
    "CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_CHOWN", "CAP_FOWNER",
    "CAP_DAC_OVERRIDE", "CAP_KILL", "CAP_NET_ADMIN",
}  # fmt: skip


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file, each key with its values in order (systemd allows repeats);
    lines ending in a backslash continue. Anything else than sections, comments and
    ``Key=value`` lines fails."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if pending:
            if raw.lstrip().startswith("#"):
                continue  # systemd skips comments inside a continued line
            raw = pending + " " + raw.strip()
            pending = ""
        if raw.endswith("\\"):
            pending = raw[:-1].rstrip()
            continue
        logical.append(raw)
    assert not pending, "the file ends inside a continued line"
    for line in logical:
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        header = re.fullmatch(r"\[([A-Za-z]+)\]", stripped)
        if header:
            assert header.group(1) not in sections, f"section {header.group(1)} twice"
            current = sections[header.group(1)] = {}
            continue
        match = re.fullmatch(r"([A-Za-z][A-Za-z0-9]*)=(.*)", stripped)
        assert match and current is not None, f"not a unit file line: {line!r}"
        current.setdefault(match.group(1), []).append(match.group(2).strip())
    return sections


def parse_env_file(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), line
            values[name] = value
    return values


def exec_start_args(unit: dict[str, dict[str, list[str]]], env: dict[str, str]) -> list[str]:
    """ExecStart's arguments after the program as systemd makes them: ``%d`` is the credentials
    directory, ``${VAR}`` one word, ``$VAR`` as many words as it splits into."""
    (command,) = unit["Service"]["ExecStart"]
    words = shlex.split(command.replace("%d", CREDENTIALS))
    args: list[str] = []
    for word in words[1:]:
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            args += env[whole.group(1)].split()
            continue
        args.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env[m.group(1)], word))
    assert words[0] == "/opt/fissile/bin/fissile"
    return args


def unit_environment(unit: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in unit["Service"]["Environment"]:
        for assignment in shlex.split(line):
            name, _, value = assignment.partition("=")
            values[name] = value
    return values


def test_execstart_is_a_fissile_up_that_parses_with_the_defaults() -> None:
    unit = parse_unit(UNIT.read_text())
    args = exec_start_args(unit, unit_environment(unit))
    assert args[0] == "up"
    context = up.make_context("up", args[1:])
    assert str(context.params["token_file"]) == f"{CREDENTIALS}/api-token"
    assert str(context.params["data_dir"]) == "/var/lib/fissile"
    assert (context.params["host"], context.params["port"]) == ("127.0.0.1", 8080)
    assert (context.params["api_host"], context.params["api_port"]) == ("127.0.0.1", 8081)


def test_execstart_parses_with_the_example_environment_file() -> None:
    unit = parse_unit(UNIT.read_text())
    env = {**unit_environment(unit), **parse_env_file(ENV_EXAMPLE.read_text())}
    context = up.make_context("up", exec_start_args(unit, env)[1:])
    assert context.params["sandbox"] == "strict"
    assert context.params["host"] == "0.0.0.0"
    # Every variable the example sets is the unit's or one `fissile up` reads itself.
    envvars = {param.envvar for param in up.params if isinstance(param.envvar, str)}
    commented = re.findall(r"^#([A-Z_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE)
    for name in [*parse_env_file(ENV_EXAMPLE.read_text()), *commented]:
        assert name in unit_environment(unit) or name in envvars, name


def test_a_flag_fissile_up_lacks_is_caught() -> None:
    unit = parse_unit(UNIT.read_text())
    env = {**unit_environment(unit), "FISSILE_ARGS": "--sandbox strict --no-such-flag"}
    with pytest.raises(click.NoSuchOption):
        up.make_context("up", exec_start_args(unit, env)[1:])


def test_the_unit_stops_and_confines_fissile_as_documented() -> None:
    service = parse_unit(UNIT.read_text())["Service"]
    # SIGTERM to fissile alone: it stops its instances itself, then the rest is killed.
    assert service["KillMode"] == ["mixed"] and service["KillSignal"] == ["SIGTERM"]
    assert service["Restart"] == ["on-failure"]
    (bounding,) = service["CapabilityBoundingSet"]
    assert set(bounding.split()) == CAPABILITIES
    assert service["NoNewPrivileges"] == ["yes"]
    for accounting in ("MemoryAccounting", "CPUAccounting", "TasksAccounting"):
        assert service[accounting] == ["yes"], accounting
    assert service["LoadCredential"] == ["api-token:/etc/fissile/api-token"]
    for breaking in ("ProtectKernelTunables", "ProtectControlGroups", "RestrictNamespaces",
                     "SystemCallFilter", "PrivateDevices", "User", "DynamicUser"):  # fmt: skip
        assert breaking not in service, breaking


@pytest.mark.skipif(
    not shutil.which("systemd-analyze") and os.environ.get("CI") != "true",
    reason="systemd-analyze is not installed",
)
def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at this fissile.
    fissile = Path(sys.executable).parent / "fissile"
    unit = tmp_path / "fissile.service"
    unit.write_text(UNIT.read_text().replace("/opt/fissile/bin/fissile", str(fissile)))
    checked = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    complaints = [line for line in checked.stderr.splitlines() if str(unit) in line]
    assert checked.returncode == 0 and not complaints, checked.stderr

    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("KillMode=mixed", "KillMode=gentle"))
    checked = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "kill mode" in checked.stderr, checked.stderr
