"""Packages build on any node of a cluster (``fissile up --cluster``, one PostgreSQL schema):
a source uploaded through one node is recorded and copied to the others, so a rebuild or a
build-command change through another node builds after the first is stopped or drained, and
a build cut short by its node's stop is finished by another."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from clusterkit import Node, cluster
from syskit import wait_for, write

from fissile.builder.archive import zip_path

# The build writes which command built it and when: each build answers differently.
BUILD = 'cp -r "$SRC_PKG" "$DEPLOY_PKG" && echo "{tag} $(date +%s%N)" > "$DEPLOY_PKG/stamp"'


def api(node: Node, method: str, path: str, **kwargs: Any) -> httpx.Response:
    token = (node.data_dir / "api-token").read_text().strip()
    headers = {"authorization": f"Bearer {token}"}
    return node.http.request(method, node.api_url + path, headers=headers, **kwargs)


def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write(src / "stamped.py", "def main():\n    return open('stamp').read().strip()\n")
    return src


def deploy(node: Node, tmp_path: Path) -> str:
    """A package with a build command and a function on it, made through ``node``."""
    node.ok("pkg", "create", "--name", "p", "--env", "python", "--src", str(source(tmp_path)),
            "--buildcmd", BUILD.format(tag="one"), "--wait")  # fmt: skip
    node.ok("fn", "create", "--name", "stamped", "--pkg", "p", "--entrypoint", "stamped.main")
    answer = node.get("/function/stamped", timeout=60)
    assert answer.status_code == 200 and answer.text.startswith("one "), answer.text
    return answer.text


def answered(node: Node, before: str) -> str:
    """The function's answer through ``node`` once it is no longer ``before``."""

    def fresh() -> str | None:
        answer = node.get("/function/stamped", timeout=60)
        return answer.text if answer.status_code == 200 and answer.text != before else None

    result: str = wait_for(fresh, 60, "the function answering with its new build")
    return result


# Slow (about 20-25 s on a loaded machine): two cluster nodes, three builds, a node stopped.
@pytest.mark.slow
def test_a_rebuild_through_another_node_builds_after_the_receiving_node_stopped(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path / "c", 2) as nodes:
        first, second = nodes.nodes
        before = deploy(first, tmp_path)
        sha = second.json_of("pkg", "info", "--name", "p")["source"]
        # node2 copied the source as soon as it saw the package.
        wait_for(lambda: (second.data_dir / "archives" / f"{sha}.zip").is_file(), 30, "a copy")
        first.stop()  # SIGTERM: node1, which received the source, is gone

        result = second.ok("pkg", "rebuild", "--name", "p", "--wait")
        assert "rebuilt" in result.out, result
        after = answered(second, before)
        assert after.startswith("one ") and after != before
        package = second.json_of("pkg", "info", "--name", "p")
        assert package["status"]["state"] == "succeeded", package
        assert package["status"]["node"] == "node2", package
        assert "build succeeded" in package["status"]["log"], package


@pytest.mark.slow
def test_a_build_command_change_through_another_node_builds_while_the_first_is_drained(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path / "c", 2) as nodes:
        first, second = nodes.nodes
        before = deploy(first, tmp_path)
        second.ok("node", "drain", "node1")
        wait_for(lambda: second.nodes()["node1"]["state"] == "draining", 30, "node1 draining")

        second.ok("pkg", "update", "--name", "p", "--buildcmd", BUILD.format(tag="two"), "--wait")
        assert answered(second, before).startswith("two ")

        # A source uploaded through one node (a balancer spreading API calls) and named by a
        # package created through another: copied there first.
        write(tmp_path / "other" / "stamped.py", "def main():\n    return 'other'\n")
        uploaded = api(first, "POST", "/v1/archives", content=zip_path(tmp_path / "other"))
        assert uploaded.status_code == 201, uploaded.text
        sha = uploaded.json()["sha256"]
        body = {"name": "q", "env": "python", "source": sha}
        created = api(second, "POST", "/v1/packages", json=body)
        assert created.status_code == 201, created.text
        assert (second.data_dir / "archives" / f"{sha}.zip").is_file()


# Slow (about 25-30 s on a loaded machine): two cluster nodes, a build cut short by a stop.
@pytest.mark.slow
def test_a_build_cut_short_by_its_nodes_stop_is_finished_by_another(tmp_path: Path) -> None:
    # Bound but not listening (connections are refused) until the build may finish.
    gate = socket.socket()
    gate.bind(("127.0.0.1", 0))
    knock = f"import socket; socket.create_connection(('127.0.0.1', {gate.getsockname()[1]}), 1)"
    gated = f'until python -c "{knock}" 2>/dev/null; do sleep 0.05; done; ' + BUILD.format(
        tag="gated"
    )
    with cluster(tmp_path / "c", 2) as nodes:
        first, second = nodes.nodes
        first.ok("pkg", "create", "--name", "p", "--env", "python", "--src",
                 str(source(tmp_path)), "--buildcmd", gated)  # fmt: skip

        def status() -> dict[str, str]:
            info: dict[str, str] = second.json_of("pkg", "info", "--name", "p")["status"]
            return info

        wait_for(lambda: status()["state"] == "building", 30, "node1 building")
        assert status()["node"] == "node1"
        first.stop()  # SIGTERM mid-build: its build is killed, the package left "building"

        wait_for(lambda: status()["node"] == "node2", 30, "node2 taking the build over")
        gate.listen()
        try:
            wait_for(lambda: status()["state"] == "succeeded", 60, "the build finished")
        finally:
            gate.close()
        second.ok("fn", "create", "--name", "stamped", "--pkg", "p", "--entrypoint",
                  "stamped.main")  # fmt: skip
        answer = second.get("/function/stamped", timeout=60)
        assert answer.status_code == 200 and answer.text.startswith("gated "), answer.text
        assert "its build was left by node node1" in second.stderr()
