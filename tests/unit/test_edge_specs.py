"""Edge settings in spec files: the APIKey kind (never a value), Fission's HTTPTrigger host."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from fissile.specs.apply import execute
from fissile.specs.deployment import init
from fissile.specs.plan import make_plan
from fissile.specs.validate import load_specs
from fissile.specs.write import save


def test_an_apikey_spec_declares_no_value(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    init(specs, "t")
    path = save(specs, "APIKey", {"name": "mobile", "functions": ["api"], "rate": "10/s"})
    text = path.read_text()
    assert "kind: APIKey" in text and "value" not in text and "hash" not in text
    loaded = load_specs(specs)
    assert loaded.errors == []
    found = {(r.kind, r.name): r.body for r in loaded.resources}
    assert found["apikeys", "mobile"]["functions"] == ["api"]


def test_fission_http_trigger_host_is_mapped(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "route.yaml").write_text(
        textwrap.dedent(
            """
            apiVersion: fission.io/v1
            kind: HTTPTrigger
            metadata:
              name: hosted
            spec:
              functionref:
                name: hello
                type: name
              host: API.example.com
              method: GET
              relativeurl: /hello
            """
        ).lstrip()
    )
    loaded = load_specs(specs)
    route = next(r for r in loaded.resources if r.kind == "httptriggers")
    assert route.body["host"] == "api.example.com"
    assert not [w for w in loaded.warnings if "host" in w.message]


class FakeApi:
    def __init__(self) -> None:
        self.created: list[tuple[str, dict[str, Any]]] = []

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append((kind, body))
        return {**body, "value": "fsk_only-now"} if kind == "apikeys" else body

    def update(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def delete(self, kind: str, name: str) -> dict[str, Any]:
        return {}

    def upload_archive(self, data: bytes) -> dict[str, Any]:
        return {}

    def wait_for_build(self, name: str, timeout: float = 0) -> dict[str, Any]:
        return {}

    def wait_for_rollout(self, package: dict[str, Any], timeout: float = 0) -> dict[str, str]:
        return {}


def test_apply_prints_a_new_keys_value_once(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    init(specs, "t")
    save(specs, "APIKey", {"name": "mobile", "functions": []})
    loaded = load_specs(specs)
    assert loaded.deployment is not None
    plan = make_plan(loaded.resources, {}, loaded.deployment.id, delete=False)
    said: list[str] = []
    api = FakeApi()
    assert execute(api, plan, echo=said.append).ok
    assert api.created[0][0] == "apikeys" and "value" not in api.created[0][1]
    assert said == ["created API key 'mobile'", "  its value (shown only now): fsk_only-now"]
    # Applied again over the key that exists: unchanged, and no value anywhere.
    live = {"apikeys": [{"name": "mobile", "functions": [], "hint": "fsk_abcd", "labels": {}}]}
    again = make_plan(loaded.resources, live, loaded.deployment.id, delete=False)
    assert [step.action for step in again.steps] == ["unchanged"]
