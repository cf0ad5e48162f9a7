"""Sealing secrets' values: the key file (made once, 0600, apart from the database), round
trips, a wrong key or an altered token refused, digests keyed so they tell a change only."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from fissile.models import ConfigMapSpec, SecretSpec
from fissile.values import records
from fissile.values.sealing import Sealer, SealError, ensure_key, key_path

VALUES = {"url": "postgres://u:pw-9f3@db/app", "token": "tkn-\u00e9-42"}


def test_the_key_is_made_on_first_use_0600_in_a_0700_directory(tmp_path: Path) -> None:
    path = key_path(tmp_path)
    sealer = Sealer(path)
    assert not path.exists()  # nothing sealed yet: no key
    sealer.seal(VALUES)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ensure_key(path) == path.read_bytes().strip()
    assert not list(path.parent.glob("*.part"))


def test_values_round_trip_and_the_token_is_not_plain_text(tmp_path: Path) -> None:
    sealer = Sealer(key_path(tmp_path))
    token = sealer.seal(VALUES)
    assert "pw-9f3" not in token and "tkn" not in token
    assert sealer.seal(VALUES) != token  # a fresh IV each time
    # Another process with the same key file opens it.
    assert Sealer(key_path(tmp_path)).open(token) == VALUES


def test_another_key_or_an_altered_token_is_refused(tmp_path: Path) -> None:
    token = Sealer(key_path(tmp_path / "a")).seal(VALUES)
    other = Sealer(key_path(tmp_path / "b"))
    other.seal({})  # it has a key of its own
    with pytest.raises(SealError, match="cannot be decrypted"):
        other.open(token)
    sealer = Sealer(key_path(tmp_path / "a"))
    altered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    with pytest.raises(SealError):
        sealer.open(altered)


def test_a_lost_key_is_not_silently_replaced_when_opening(tmp_path: Path) -> None:
    token = Sealer(key_path(tmp_path)).seal(VALUES)
    key_path(tmp_path).unlink()
    with pytest.raises(SealError, match="there is no secrets key"):
        Sealer(key_path(tmp_path)).open(token)
    assert not key_path(tmp_path).exists()


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = key_path(tmp_path)
    ensure_key(path)
    path.chmod(0o644)
    with pytest.raises(SealError, match="chmod 600"):
        Sealer(path).seal(VALUES)
    path.write_text("not a key\n")
    path.chmod(0o600)
    with pytest.raises(SealError, match="does not hold a secrets key"):
        Sealer(path).seal(VALUES)


def test_digests_tell_a_change_and_are_keyed(tmp_path: Path) -> None:
    sealer = Sealer(key_path(tmp_path / "a"))
    digest = sealer.digest(VALUES)
    assert sealer.digest(dict(reversed(VALUES.items()))) == digest  # order does not matter
    assert sealer.digest({**VALUES, "url": "other"}) != digest
    # Not a plain hash anyone could check guesses against: another key, another digest.
    assert Sealer(key_path(tmp_path / "b")).digest(VALUES) != digest
    plain = json.dumps(VALUES, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(plain.encode()).hexdigest() != digest


def test_a_secret_record_holds_no_value_and_its_view_no_token(tmp_path: Path) -> None:
    sealer = Sealer(key_path(tmp_path))
    record = records.to_record(SecretSpec(name="db", data=VALUES), sealer)
    stored = json.dumps(record)
    assert "pw-9f3" not in stored and "tkn" not in stored
    assert record["keys"] == [
        {"key": "token", "size": len(VALUES["token"].encode())},
        {"key": "url", "size": len(VALUES["url"])},
    ]
    assert records.values_of("secrets", record, sealer) == VALUES
    shown = records.view(dict(record))
    assert records.SEALED not in shown and "data" not in shown


def test_a_config_map_record_keeps_its_values_readable(tmp_path: Path) -> None:
    sealer = Sealer(key_path(tmp_path))
    record = records.to_record(ConfigMapSpec(name="cfg", data={"page": "25"}), sealer)
    assert record["data"] == {"page": "25"} and records.SEALED not in record
    assert records.values_of("configmaps", record, sealer) == {"page": "25"}


@pytest.mark.parametrize("key", ["..", ".", "a/b", "", "sp ace"])
def test_keys_must_be_file_names(key: str) -> None:
    with pytest.raises(ValueError):
        SecretSpec(name="db", data={key: "v"})


def test_values_are_bounded() -> None:
    with pytest.raises(ValueError, match="at most"):
        SecretSpec(name="db", data={"a": "x" * (1024 * 1024), "b": "y"})
