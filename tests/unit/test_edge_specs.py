"""Edge settings in spec files: the APIKey kind (never a value), Fission's HTTPTrigger host."""

from __future__ import annotations

import textwrap
from pathlib import Path

from fissile.specs.deployment import init
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
