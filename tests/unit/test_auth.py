"""The control API's token: made once, private, compared in constant time."""

from __future__ import annotations

from pathlib import Path

from fissile.controlplane.auth import authorized, ensure_token


def test_token_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "api-token"
    token = ensure_token(path)
    assert len(token) >= 40
    assert path.stat().st_mode & 0o777 == 0o600
    assert ensure_token(path) == token


def test_only_the_exact_bearer_token_is_authorized() -> None:
    assert authorized("Bearer s3cret", "s3cret")
    assert not authorized(None, "s3cret")
    assert not authorized("s3cret", "s3cret")
    assert not authorized("Bearer wrong", "s3cret")
    assert not authorized("Basic s3cret", "s3cret")
