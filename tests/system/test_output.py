"""Output formats for scripts, and help for people."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from syskit import Platform, free_port, run_cli, write


@pytest.fixture(scope="module")
def listed(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Platform:
    source = write(tmp_path_factory.mktemp("output") / "formats.py", "def main(): return 'f'\n")
    platform.ok("fn", "create", "--name", "formats-fn", "--code", str(source), "--env-var", "A=b")
    platform.ok(
        "route",
        "create",
        "--name",
        "formats-route",
        "--function",
        "formats-fn",
        "--url",
        "/formats",
    )
    return platform


@pytest.mark.parametrize("group", ["fn", "pkg", "route", "env"])
def test_list_json_and_yaml(listed: Platform, group: str) -> None:
    as_json = json.loads(listed.ok(group, "list", "-o", "json").out)
    as_yaml = yaml.safe_load(listed.ok(group, "list", "-o", "yaml").out)
    assert isinstance(as_json, list) and as_json, as_json
    assert all(isinstance(item, dict) and "name" in item for item in as_json)
    assert [i["name"] for i in as_yaml] == [i["name"] for i in as_json]
    expected = {"fn": "formats-fn", "pkg": None, "route": "formats-route", "env": "python"}[group]
    if expected is not None:
        assert expected in [i["name"] for i in as_json]


def test_fn_list_json_fields(listed: Platform) -> None:
    functions = {f["name"]: f for f in json.loads(listed.ok("fn", "list", "-o", "json").out)}
    fn = functions["formats-fn"]
    assert fn["env"] == "python"
    assert fn["env_vars"] == {"A": "b"}
    assert isinstance(fn["timeout"], int | float)
    assert {"instances", "restarts"} <= set(fn["status"])
    owned = [p for p in listed.json_of("pkg", "list") if p["name"] == fn["package"]]
    assert owned and owned[0]["owner"] == "formats-fn"


def test_get_formats(listed: Platform) -> None:
    as_yaml = yaml.safe_load(listed.ok("fn", "get", "--name", "formats-fn", "-o", "yaml").out)
    assert as_yaml["name"] == "formats-fn"
    route = json.loads(listed.ok("route", "get", "--name", "formats-route", "-o", "json").out)
    assert route["url"] == "/formats"
    assert route["function"] == "formats-fn"
    assert route["methods"] == ["GET"]


def test_table_output(listed: Platform) -> None:
    lines = listed.ok("fn", "list").out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "ENV", "PACKAGE"]
    row = next(line.split() for line in lines[1:] if line.split()[0] == "formats-fn")
    assert row[1] == "python"
    routes = listed.ok("route", "list", "--function", "formats-fn").out.splitlines()
    assert len(routes) == 2, routes
    assert routes[0].split() == ["NAME", "METHODS", "URL", "FUNCTION", "EDGE"]
    # EDGE is "-": no host, credentials, CORS, rate or webhook secret on this route.
    assert routes[1].split() == ["formats-route", "GET", "/formats", "formats-fn", "-"]


def test_create_with_json_output(listed: Platform) -> None:
    created = json.loads(
        listed.ok(
            "route", "create", "--function", "formats-fn", "--prefix", "/fmt-prefix",
            "--method", "ANY", "-o", "json",
        ).out
    )  # fmt: skip
    assert created["prefix"] == "/fmt-prefix"
    assert created["function"] == "formats-fn"
    assert listed.request("DELETE", "/fmt-prefix/x").text == "f"


def _subcommands(help_text: str) -> list[str]:
    section = help_text.split("Commands:", 1)[1]
    return re.findall(r"^  (\S+)", section, flags=re.MULTILINE)


def test_help_on_every_command() -> None:
    """Every group (aliases too) answers --help, and so does each command of one group (``fn``,
    the richest) plus ``create`` of every other; none needs a platform: the CLI points at a
    port where nothing listens. (Each command costs the CLI's start-up, so not all ~25.)"""
    api = f"http://127.0.0.1:{free_port()}"
    top = run_cli(api, "--help")
    assert top.rc == 0, top
    groups = _subcommands(top.out)
    assert {"env", "pkg", "package", "fn", "function", "route", "httptrigger", "ht", "up"} <= set(
        groups
    )
    with ThreadPoolExecutor(2) as pool:
        helps = pool.map(lambda g: run_cli(api, g, "--help"), groups)
        group_helps = dict(zip(groups, helps, strict=True))
        for group, result in group_helps.items():
            assert result.rc == 0, result
            assert f"Usage: fissile {group}" in result.out, result
        fn_commands = _subcommands(group_helps["fn"].out)
        assert {"create", "update", "get", "list", "delete", "test", "logs"} <= set(fn_commands)
        commands = [("fn", c, "--help") for c in fn_commands]
        commands += [(g, "create", "--help") for g in ("env", "pkg", "route")]
        commands += [("function", "create", "-h"), ("ht", "list", "-h")]
        results = list(pool.map(lambda c: run_cli(api, *c), commands))
    for command, result in zip(commands, results, strict=True):
        assert result.rc == 0, result
        assert f"Usage: fissile {' '.join(command[:-1])}" in result.out, result
        assert result.err == "", result
    # An alias shows the same help as its group.
    assert group_helps["function"].out.replace("function", "fn") == group_helps["fn"].out.replace(
        "function", "fn"
    )
    version = run_cli(api, "--version")
    assert version.rc == 0 and "fissile" in version.out, version
