"""fissile/config.py: where data lives and where listeners bind."""

from __future__ import annotations

from pathlib import Path

import pytest

from fissile.config import Config, default_data_dir


def test_fissile_data_dir_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FISSILE_DATA_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "explicit"


def test_xdg_data_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FISSILE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "fissile"


def test_home_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FISSILE_DATA_DIR", "")
    monkeypatch.setenv("XDG_DATA_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "fissile"


def test_config_default_uses_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FISSILE_DATA_DIR", str(tmp_path))
    config = Config()
    assert config.data_dir == tmp_path
    assert (config.host, config.port, config.api_host, config.api_port) == (
        "127.0.0.1",
        8080,
        "127.0.0.1",
        8081,
    )


def test_paths(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path)
    assert config.database == tmp_path / "fissile.db"
    assert config.archives == tmp_path / "archives"
    assert config.deploy == tmp_path / "deploy"
    assert config.logs == tmp_path / "logs"


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:9000"),
        ("0.0.0.0", "http://127.0.0.1:9000"),
        ("::", "http://127.0.0.1:9000"),
        ("", "http://127.0.0.1:9000"),
        ("example.org", "http://example.org:9000"),
    ],
)
def test_router_url(host: str, url: str, tmp_path: Path) -> None:
    assert Config(data_dir=tmp_path, host=host, port=9000).router_url == url


def test_router_url_of_an_ipv6_host(tmp_path: Path) -> None:
    assert Config(data_dir=tmp_path, host="::1", port=8080).router_url == "http://[::1]:8080"


def test_store_url_defaults_to_the_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    assert Config(data_dir=tmp_path).store == f"sqlite://{tmp_path / 'fissile.db'}"
    url = "postgresql://fissile@db:5432/fissile"
    assert Config(data_dir=tmp_path, store_url=url).store == url
