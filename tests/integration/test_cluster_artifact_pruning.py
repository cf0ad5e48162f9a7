"""Packed builds of a cluster's node go with their build (``cluster/artifacts.py``): its
archive in ``<data>/artifacts`` and its holder row, on a real PostgreSQL (a fresh schema)."""

from __future__ import annotations

from pathlib import Path

import psycopg
from pgkit import fresh_schema

from fissile.cluster.artifacts import Artifacts


def build(deploy: Path, key: str, text: str) -> None:
    (deploy / key).mkdir(parents=True)
    (deploy / key / "handler.py").write_text(text)


def rows(url: str) -> set[tuple[str, str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {(k, n) for k, n in conn.execute("SELECT key, node FROM fissile_artifacts")}


async def test_forgetting_builds_drops_their_archives_and_rows(tmp_path: Path) -> None:
    deploy, root = tmp_path / "deploy", tmp_path / "artifacts"
    build(deploy, "k1", "one")
    build(deploy, "k2", "two")
    with fresh_schema() as url:
        artifacts = Artifacts(url, "a", root, deploy, "t0ken", 10)
        other = Artifacts(url, "b", tmp_path / "b-artifacts", deploy, "t0ken", 10)
        await artifacts.start()
        try:
            await artifacts.publish("k1")
            await artifacts.publish("k2")
            await other.publish("k1")  # another node holds k1 too
            archives = {p.name for p in root.glob("*.tar")}
            assert len(archives) == 2
            assert sorted(await artifacts.held()) == ["k1", "k2"]

            await artifacts.forget({"k1", "unknown"})
            assert sorted(await artifacts.held()) == ["k2"]
            assert len(list(root.glob("*.tar"))) == 1
            assert rows(url) == {("k2", "a"), ("k1", "b")}  # the other node still offers k1
            assert artifacts.local(next(root.glob("*.tar")).stem) is not None
            # Published again later (built again): packed again, not skipped as known.
            await artifacts.publish("k1")
            assert sorted(await artifacts.held()) == ["k1", "k2"]
            assert len(list(root.glob("*.tar"))) == 2
        finally:
            await artifacts.aclose()
            await other.aclose()
