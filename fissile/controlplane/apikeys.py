"""``/v1/apikeys``: API keys for routes with ``auth: apikey`` and for locked function doors.
A key's value is made here and returned once, by its create; the store keeps a SHA-256 of it
(the value is 256 random bits), so no read, backup or spec shows it again."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from fissile.controlplane.errors import conflict, not_found
from fissile.controlplane.resources import Resources
from fissile.models import APIKey, APIKeySpec
from fissile.router.auth import KEY_PREFIX, new_key
from fissile.store import AlreadyExists

KIND = "apikeys"


class CreatedAPIKey(APIKey):
    #: The key itself: in this answer only.
    value: str


def _view(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "hash"}


def add_apikey_routes(app: FastAPI, resources: Resources, errors: Any) -> None:
    def check(spec: APIKeySpec) -> dict[str, Any]:
        for function in spec.functions:
            resources.get("functions", function)  # 404 naming it
        return spec.model_dump(mode="json")

    @app.get("/v1/apikeys", response_model=list[APIKey], tags=["apikeys"], responses=errors())
    async def list_keys() -> Any:
        return [_view(record.merged()) for record in resources.store.list(KIND)]

    @app.get(
        "/v1/apikeys/{name}", response_model=APIKey, tags=["apikeys"], responses=errors(404, 422)
    )
    async def get_key(name: str) -> Any:
        record = resources.store.find(KIND, name)
        if record is None:
            raise not_found("API key", name)
        return _view(record.merged())

    @app.post(
        "/v1/apikeys",
        response_model=CreatedAPIKey,
        status_code=201,
        tags=["apikeys"],
        responses=errors(404, 409, 422, 507),
    )
    async def create_key(spec: APIKeySpec) -> Any:
        data = check(spec)
        value, digest = new_key()
        data["hash"] = digest
        data["hint"] = value[: len(KEY_PREFIX) + 4]
        try:
            record = resources.store.create(KIND, spec.name, data)
        except AlreadyExists:
            raise conflict(f"API key {spec.name!r} already exists") from None
        return {**_view(record.merged()), "value": value}

    @app.put(
        "/v1/apikeys/{name}",
        response_model=APIKey,
        tags=["apikeys"],
        responses=errors(404, 409, 422, 507),
    )
    async def update_key(name: str, spec: APIKeySpec) -> Any:
        current = resources.store.find(KIND, name)
        if current is None:
            raise not_found("API key", name)
        if spec.name != name:
            raise conflict(f"the body names {spec.name!r} but the URL names {name!r}")
        data = check(spec)
        # The value stays: a key is changed by deleting it and creating another.
        data["hash"], data["hint"] = current.data["hash"], current.data.get("hint", "")
        return _view(resources.store.update(KIND, name, data).merged())

    @app.delete(
        "/v1/apikeys/{name}",
        response_model=APIKey,
        tags=["apikeys"],
        responses=errors(404, 422, 507),
    )
    async def delete_key(name: str) -> Any:
        if resources.store.find(KIND, name) is None:
            raise not_found("API key", name)
        return _view(resources.store.delete(KIND, name).merged())
