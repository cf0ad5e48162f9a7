"""Secrets and config maps through the control API on a real store and executor: values go in
and never come out, a re-sent secret changes nothing, references are checked, a secret in use
stays, and the store on disk holds no value."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from intkit import Harness
from test_controlplane import Api, error

import fissile
from fissile.builder import ArchiveStore, Builder
from fissile.controlplane import Resources, create_api
from fissile.models import PlatformInfo
from fissile.values.sealing import Sealer, key_path

VALUE = "pa55-w0rd-Qx7"


@pytest.fixture
async def api(harness: Harness) -> AsyncIterator[Api]:
    archives = ArchiveStore(harness.root / "archives")
    builder = Builder(harness.store, archives, harness.deploy_root)
    sealer = Sealer(key_path(harness.root / "data"))
    resources = Resources(
        harness.store, builder, archives, harness.executor, harness.logs, sealer=sealer
    )
    info = PlatformInfo(version=fissile.__version__, router_url="http://r", data_dir="/d")
    app = create_api(resources, harness.logs, info, lambda: True)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        try:
            yield Api(harness, client, builder)
        finally:
            await builder.stop()


async def test_a_secret_is_write_only(api: Api) -> None:
    created = await api.client.post(
        "/v1/secrets", json={"name": "db", "data": {"password": VALUE, "user": "app"}}
    )
    assert created.status_code == 201, created.text
    for response in (
        created,
        await api.client.get("/v1/secrets/db"),
        await api.client.get("/v1/secrets"),
    ):
        assert VALUE not in response.text and "sealed" not in response.text
    shown = created.json()
    assert shown["keys"] == [{"key": "password", "size": len(VALUE)}, {"key": "user", "size": 3}]
    assert "data" not in shown and len(shown["digest"]) == 64

    # The digest endpoint says whether declared values are the stored ones; stores nothing.
    same = await api.client.post(
        "/v1/secret-digests", json={"name": "db", "data": {"user": "app", "password": VALUE}}
    )
    assert same.json() == {"digest": shown["digest"]}

    # The same values again: nothing written, nothing rolls (the generation stays).
    again = await api.client.put(
        "/v1/secrets/db", json={"name": "db", "data": {"password": VALUE, "user": "app"}}
    )
    assert again.json()["generation"] == shown["generation"]
    changed = await api.client.put("/v1/secrets/db", json={"name": "db", "data": {"p": "new"}})
    assert changed.json()["generation"] == shown["generation"] + 1

    # On disk: ciphertext only.
    api.harness.store.close()
    stored = list(api.harness.root.rglob("*.db*"))
    assert stored
    for path in stored:
        assert VALUE.encode() not in path.read_bytes() and b'"new"' not in path.read_bytes()


async def test_config_map_values_are_shown(api: Api) -> None:
    created = await api.client.post("/v1/configmaps", json={"name": "cfg", "data": {"page": "25"}})
    assert created.status_code == 201, created.text
    assert (await api.client.get("/v1/configmaps/cfg")).json()["data"] == {"page": "25"}


async def test_references_are_checked_and_a_secret_in_use_stays(api: Api) -> None:
    await api.package()
    missing = await api.function(secrets=["nope"])
    assert error(missing, 404)["message"] == "secret 'nope' not found (field secrets.0)"
    await api.client.post("/v1/secrets", json={"name": "db", "data": {"url": "x"}})
    await api.client.post("/v1/configmaps", json={"name": "cfg", "data": {"page": "1"}})
    bad_key = await api.function(env_vars={"URL": "${secret:db/nope}"})
    assert error(bad_key, 422)["message"] == "secret 'db' has no key 'nope'"
    made = await api.function(
        secrets=["db"], configmaps=[{"name": "cfg"}], env_vars={"URL": "${secret:db/url}"}
    )
    assert made.status_code == 201, made.text
    assert made.json()["secrets"] == [{"name": "db", "namespace": "default"}]
    assert made.json()["env_vars"] == {"URL": "${secret:db/url}"}
    for kind, name in (("secrets", "db"), ("configmaps", "cfg")):
        refused = error(await api.client.delete(f"/v1/{kind}/{name}"), 409)
        assert "in use by function 'fn'" in refused["message"]
    await api.client.delete("/v1/functions/fn")
    assert (await api.client.delete("/v1/secrets/db")).status_code == 200


async def test_invalid_keys_and_sizes_are_422(api: Api) -> None:
    bad = await api.client.post("/v1/secrets", json={"name": "db", "data": {"../x": "v"}})
    assert error(bad, 422)["message"].startswith("invalid request: data.../x.[key]")
    big = {"name": "db", "data": {"a": "x" * (1024 * 1024 + 1)}}
    assert (
        "at most 1048576" in error(await api.client.post("/v1/secrets", json=big), 422)["message"]
    )
