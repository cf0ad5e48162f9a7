"""Source archives shared between a cluster's nodes (``cluster/sources.py``) on a real
PostgreSQL (a fresh schema per test): recorded by sha256, fetched from a live holder, checked
by their sha256 and as an upload is, and removed once nothing names them."""

from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from pgkit import fresh_schema

import fissile.cluster.sources as sources_module
from fissile.builder.archive import zip_path
from fissile.builder.storage import ArchiveStore
from fissile.cluster.artifacts import SOURCE_PREFIX, ArtifactError, Artifacts
from fissile.cluster.nodes import Nodes
from fissile.cluster.sources import Sources


def source(tmp_path: Path) -> bytes:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "handler.py").write_text("def main():\n    return 'hi'\n")
    return zip_path(tmp_path / "src")


def escaping_zip() -> bytes:
    """A zip whose link points out of its tree: refused by an upload's checks."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("out")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "../../etc")
    return buffer.getvalue()


def node(url: str, root: Path, name: str) -> tuple[Artifacts, Sources]:
    archives = ArchiveStore(root / name / "archives")
    deploy = root / name / "deploy"
    deploy.mkdir(parents=True)
    artifacts = Artifacts(url, name, root / name / "artifacts", deploy, "t0ken", 10, archives.root)
    return artifacts, Sources(artifacts, archives)


def peer(served: dict[str, bytes]) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer t0ken"
        digest = request.url.path.rsplit("/", 1)[1]
        body = served.get(digest)
        return httpx.Response(404) if body is None else httpx.Response(200, content=body)

    return answer


def rows(url: str) -> set[tuple[str, str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {(k, n) for k, n in conn.execute("SELECT key, node FROM fissile_artifacts")}


async def test_a_source_is_recorded_fetched_and_checked_by_its_sha256(tmp_path: Path) -> None:
    data = source(tmp_path)
    with fresh_schema() as url:
        holder_node = Nodes(url, "one", "127.0.0.1:1", None)
        await holder_node.start()
        one_artifacts, one = node(url, tmp_path, "one")
        two_artifacts, two = node(url, tmp_path, "two")
        await one_artifacts.start()
        try:
            digest, _, _ = one.archives.put(data)
            await one.publish(digest)
            assert rows(url) == {(SOURCE_PREFIX + digest, "one")}
            # The holder's endpoint serves its source archives too; they are not builds.
            assert one_artifacts.local(digest) == one.archives.path(digest)
            assert await one_artifacts.held() == []

            served = {digest: data[:-1] + b"x"}  # a peer serving other bytes
            two_artifacts.transport = httpx.MockTransport(peer(served))
            with pytest.raises(ArtifactError, match="sha256 mismatch"):
                await two.ensure(digest, wait=0)
            assert not two.archives.exists(digest)
            assert list(two.archives.root.iterdir()) == []  # no scratch file left

            served[digest] = data
            await two.ensure(digest)
            assert two.archives.path(digest).read_bytes() == data
            assert two.fetched == 1
            assert rows(url) == {(SOURCE_PREFIX + digest, "one"), (SOURCE_PREFIX + digest, "two")}
            await two.ensure(digest)  # here already: not fetched again
            assert two.fetched == 1

            # Nobody alive holds this one: an error naming it, after the wait.
            with pytest.raises(ArtifactError, match="no live node holds it"):
                await two.ensure("0" * 64, wait=0.3)
            with pytest.raises(ArtifactError, match="not a sha256"):
                await two.ensure("../../etc/passwd")
        finally:
            await one_artifacts.aclose()
            await two_artifacts.aclose()
            await holder_node.stop()


async def test_a_fetched_source_is_checked_as_an_upload_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    unsafe = escaping_zip()
    digest = hashlib.sha256(unsafe).hexdigest()
    with fresh_schema() as url:
        holder_node = Nodes(url, "one", "127.0.0.1:1", None)
        await holder_node.start()
        artifacts, two = node(url, tmp_path, "two")
        artifacts.transport = httpx.MockTransport(peer({digest: unsafe}))
        await artifacts.start()
        try:
            # A holder recorded by hand (an upload would have refused it): the sha256 matches,
            # the archive is still refused before it is kept.
            await artifacts.execute(
                "INSERT INTO fissile_artifacts (key, node, sha256, size) VALUES (%s, %s, %s, %s)",
                (SOURCE_PREFIX + digest, "one", digest, len(unsafe)),
            )
            with pytest.raises(ArtifactError, match="points outside the archive"):
                await two.ensure(digest, wait=0)
            assert not two.archives.exists(digest)
            assert list(two.archives.root.iterdir()) == []

            # Past the size an upload may have, the download is cut off.
            monkeypatch.setattr(sources_module, "MAX_ARCHIVE_BYTES", len(unsafe) - 1)
            with pytest.raises(ArtifactError, match=f"larger than {len(unsafe) - 1} bytes"):
                await two.ensure(digest, wait=0)
            assert list(two.archives.root.iterdir()) == []
        finally:
            await artifacts.aclose()
            await holder_node.stop()


async def test_unused_sources_are_removed_after_the_grace(tmp_path: Path) -> None:
    with fresh_schema() as url:
        artifacts, sources = node(url, tmp_path, "one")
        await artifacts.start()
        try:
            (tmp_path / "a").mkdir()
            (tmp_path / "a" / "x.py").write_text("A = 1\n")
            used, _, _ = sources.archives.put(zip_path(tmp_path / "a"))
            (tmp_path / "a" / "x.py").write_text("A = 2\n")
            kept_by_revision, _, _ = sources.archives.put(zip_path(tmp_path / "a"))
            (tmp_path / "a" / "x.py").write_text("A = 3\n")
            unused, _, _ = sources.archives.put(zip_path(tmp_path / "a"))
            (tmp_path / "a" / "x.py").write_text("A = 4\n")
            uploaded_again, _, _ = sources.archives.put(zip_path(tmp_path / "a"))
            for digest in (used, kept_by_revision, unused, uploaded_again):
                await sources.publish(digest)
            await artifacts.execute(
                "CREATE TABLE revisions (function TEXT, number INTEGER, pruned BOOLEAN, data TEXT)",
                (),
            )
            await artifacts.execute(
                "INSERT INTO revisions VALUES ('f', 1, false, %s), ('f', 0, true, %s)",
                (
                    f'{{"package": {{"source": "{kept_by_revision}"}}}}',
                    f'{{"package": {{"source": "{unused}"}}}}',  # pruned: names nothing
                ),
            )
            # Within the grace (an upload waiting for its package): kept.
            assert await sources.sweep([used]) == set()
            await artifacts.execute(
                "UPDATE fissile_artifacts SET created_at = now() - interval '1 hour'", ()
            )
            await sources.publish(uploaded_again, uploaded=True)  # its grace starts again
            assert await sources.sweep([used]) == {unused}
            assert not sources.archives.exists(unused)
            assert sources.archives.exists(used) and sources.archives.exists(kept_by_revision)
            assert set(await sources.held()) == {used, kept_by_revision, uploaded_again}
            # Stored again later (uploaded again): offered again, not skipped as known.
            (tmp_path / "a" / "x.py").write_text("A = 3\n")
            assert sources.archives.put(zip_path(tmp_path / "a"))[0] == unused
            await sources.publish(unused)
            assert unused in await sources.held()
        finally:
            await artifacts.aclose()
