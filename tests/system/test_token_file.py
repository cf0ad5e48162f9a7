"""``fissile up --token-file``: a token the operator provides (a systemd credential, a
Kubernetes Secret) instead of the one made in the data dir; the CLI finds it through
``$FISSILE_TOKEN_FILE``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from syskit import CLI_TIMEOUT, FISSILE, Spawn, free_port, run_cli


def test_the_api_answers_only_to_the_token_in_the_file(
    spawn: Spawn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "secret" / "api-token"
    token_file.parent.mkdir()
    token_file.write_text("operator-chosen-token-0123456789\n")
    running = spawn(None, "--token-file", str(token_file))

    info = running.http.get(
        f"{running.api_url}/v1/info",
        headers={"authorization": "Bearer operator-chosen-token-0123456789"},
    )
    assert info.status_code == 200, info.text
    assert running.http.get(f"{running.api_url}/v1/info").status_code == 401
    # The data dir gets no token of its own: the file is the only one.
    assert not (running.data_dir / "api-token").exists()

    monkeypatch.setenv("FISSILE_TOKEN_FILE", str(token_file))
    listed = run_cli(running.api_url, "fn", "list")
    assert listed.ok, listed
    monkeypatch.setenv("FISSILE_TOKEN_FILE", str(tmp_path / "missing"))
    refused = run_cli(running.api_url, "fn", "list")
    assert refused.rc == 1 and "FISSILE_TOKEN" in refused.err, refused


def test_a_missing_token_file_is_made_private(spawn: Spawn, tmp_path: Path) -> None:
    token_file = tmp_path / "api-token"
    running = spawn(None, "--token-file", str(token_file))
    token = token_file.read_text().strip()
    assert len(token) >= 40
    assert token_file.stat().st_mode & 0o777 == 0o600
    answer = running.http.get(
        f"{running.api_url}/v1/info", headers={"authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200, answer.text


def test_an_empty_token_file_is_refused_at_start(tmp_path: Path) -> None:
    # An empty token would let in every request that sends "Bearer " with nothing after it.
    token_file = tmp_path / "api-token"
    token_file.write_text("\n")
    completed = subprocess.run(
        [
            str(FISSILE),
            "up",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(free_port()),
            "--api-port",
            str(free_port()),
            "--token-file",
            str(token_file),
        ],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 1, completed
    assert f"Error: the API token file {token_file} is empty" in completed.stderr
    assert "Traceback" not in completed.stderr
