"""Clusters for the system tests: N ``fissile up --cluster`` nodes on this machine.

Each node is a ``syskit.Platform`` with its own ports, data dir (hence its own cgroup root,
which the executor names after the data dir) and builds; all share one PostgreSQL schema
(``pgkit.fresh_schema``), the NATS server on loopback, the API token (written into each data
dir before the start) and the secrets key. NATS or PostgreSQL missing skips the test with the
reason, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pgkit import fresh_schema
from syskit import Platform, wait_for

NATS = os.environ.get("FISSILE_TEST_NATS", "nats://127.0.0.1:4222")


def _absent(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: cluster tests must run)", pytrace=False)
    pytest.skip(reason)


def require_nats() -> None:
    host, _, port = NATS.removeprefix("nats://").partition(":")
    try:
        socket.create_connection((host, int(port or 4222)), timeout=3).close()
    except OSError as exc:
        _absent(f"no NATS at {NATS}: {exc}")


class Node(Platform):
    """One node of a test cluster."""

    def __init__(self, data_dir: Path, name: str, args: tuple[str, ...]) -> None:
        super().__init__(data_dir, args)
        self.name = name

    def nodes(self) -> dict[str, dict[str, Any]]:
        """``fissile node list`` through this node's API, by name."""
        return {node["name"]: node for node in self.json_of("node", "list")}


class Cluster:
    def __init__(self, root: Path, store: str, token: str) -> None:
        self.root = root
        self.store = store
        self.token = token
        self.nodes: list[Node] = []

    def add(self, *extra: str, start: bool = True) -> Node:
        name = f"node{len(self.nodes) + 1}"
        data = self.root / name
        data.mkdir(parents=True)
        token_file = data / "api-token"
        token_file.write_text(self.token + "\n")
        token_file.chmod(0o600)
        args = (
            "--cluster",
            "--store", self.store,
            "--nats", NATS,
            "--node-name", name,
            "--secrets-key-file", str(self.root / "secrets.key"),
            *extra,
        )  # fmt: skip
        node = Node(data, name, args)
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def wait_joined(self, timeout: float = 30.0) -> None:
        """Until every running node sees every other as active."""
        names = {node.name for node in self.nodes if node.process and node.process.poll() is None}

        def joined() -> bool:
            for node in self.nodes:
                if node.name in names:
                    seen = node.nodes()
                    if not all(seen.get(n, {}).get("state") == "active" for n in names):
                        return False
            return True

        wait_for(joined, timeout, f"nodes {sorted(names)} seeing each other")


@contextmanager
def cluster(root: Path, count: int, *extra: str) -> Iterator[Cluster]:
    """``count`` nodes started and joined; every one is stopped (or killed) afterwards."""
    require_nats()
    with fresh_schema() as store:
        running = Cluster(root, store, secrets.token_urlsafe(32))
        try:
            for _ in range(count):
                running.add(*extra)
            running.wait_joined()
            yield running
        finally:
            clean = []
            for node in running.nodes:
                try:
                    if node.process is not None and node.process.poll() is None:
                        node.stop()
                        clean.append(node)
                finally:
                    node.abandon()
        for node in clean:
            assert "Traceback" not in node.stderr(), node.stderr()[-5000:]
