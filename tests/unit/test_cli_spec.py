"""``--spec`` on create commands writes spec files that load back as the same resources, and the
models accept stored documents written before labels existed."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fissile.cli import cli
from fissile.models import READ_MODELS
from fissile.specs import deployment
from fissile.specs.validate import load_specs


def test_create_commands_with_spec_write_loadable_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # No platform is running: --spec must never reach the API.
    monkeypatch.setenv("FISSILE_API", "http://127.0.0.1:9")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("def main(request):\n    return 1\n")
    deployment.init(tmp_path / "specs", "demo", "d-9")
    runner = CliRunner()
    commands = [
        ["env", "create", "--name", "py2", "--poolsize", "1", "--preload", "json", "--spec"],
        ["pkg", "create", "--name", "app-pkg", "--env", "py2", "--src", "src", "--spec"],
        ["fn", "create", "--name", "app", "--env", "py2", "--pkg", "app-pkg", "--entrypoint",
         "app.main", "--memory", "64Mi", "--env-var", "A=1", "--spec"],
        ["fn", "create", "--name", "single", "--code", "src/app.py", "--spec"],
        ["route", "create", "--name", "app-route", "--function", "app", "--prefix", "/app",
         "--method", "ANY", "--spec"],
        ["timer", "create", "--name", "app-tick", "--function", "app", "--cron",
         "*/5 * * * * *", "--timezone", "Europe/Oslo", "--spec"],
        ["mqt", "create", "--name", "app-in", "--function", "app", "--mqtype", "redis",
         "--topic", "in", "--errortopic", "in-failed", "--maxretries", "1", "--spec"],
        ["watch", "create", "--name", "app-watch", "--function", "app", "--event",
         "function.*", "--spec"],
        ["route", "create", "--name", "app-split", "--function", "app=90", "--function",
         "single=10", "--url", "/split", "--spec"],
        ["canary", "create", "--name", "app-canary", "--httptrigger", "app-split",
         "--newfunction", "single", "--oldfunction", "app", "--increment-interval", "1m",
         "--spec"],
    ]  # fmt: skip
    for args in commands:
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert result.output.startswith("wrote specs/")

    loaded = load_specs(tmp_path / "specs")
    assert loaded.errors == []
    found = {(r.kind, r.name): r.body for r in loaded.resources}
    assert found["environments", "py2"]["preload"] == ["json"]
    assert found["packages", "app-pkg"]["env"] == "py2"
    assert found["functions", "app"]["memory"] == 64 * 1024**2
    assert found["functions", "app"]["env_vars"] == {"A": "1"}
    assert found["functions", "single"]["package"] == "single-code"
    assert found["timetriggers", "app-tick"]["timezone"] == "Europe/Oslo"
    mqt = found["mqtriggers", "app-in"]
    assert (mqt["mqtype"], mqt["errortopic"], mqt["maxretries"]) == ("redis", "in-failed", 1)
    assert found["watchtriggers", "app-watch"]["event"] == "function.*"
    assert found["httptriggers", "app-route"]["methods"] == ["*"]
    assert found["httptriggers", "app-split"]["function_weights"] == {"app": 90, "single": 10}
    canary = found["canaries", "app-canary"]
    assert (canary["httptrigger"], canary["increment_interval"]) == ("app-split", 60.0)

    again = runner.invoke(cli, commands[0])
    assert again.exit_code == 1
    assert "specs/environment-py2.yaml already exists" in again.output


@pytest.mark.parametrize("kind", sorted(READ_MODELS))
def test_documents_stored_without_labels_still_load(kind: str) -> None:
    documents = {
        "environments": {"name": "e"},
        "packages": {"name": "p", "env": "python", "source": "0" * 64},
        "functions": {"name": "f", "env": "python", "package": "p"},
        "httptriggers": {"name": "t", "function": "f", "url": "/t"},
        "timetriggers": {"name": "t", "function": "f", "cron": "@hourly"},
        "mqtriggers": {"name": "t", "function": "f", "topic": "in"},
        "watchtriggers": {"name": "t", "function": "f", "event": "function.created"},
        "apikeys": {"name": "k", "functions": ["f"]},
        "secrets": {"name": "s", "keys": [{"key": "k", "size": 1}]},
        "configmaps": {"name": "c", "data": {"k": "v"}},
        "canaries": {"name": "c", "httptrigger": "t", "newfunction": "g", "oldfunction": "f"},
    }
    model = READ_MODELS[kind].model_validate(documents[kind])
    assert model.model_dump()["labels"] == {}
