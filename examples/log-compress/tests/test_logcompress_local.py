"""Integration: the function in a real instance (``fissile.testing.local_instance``: the
platform's loader and response encoding, no platform) on a directory of the test's own, run
twice as the hourly timer would run it."""

from __future__ import annotations

import gzip
from pathlib import Path

from fissile.testing import invoke_local, local_instance, make_request

FUNCTION = Path(__file__).resolve().parent.parent / "functions" / "logcompress.py"


def test_an_instance_compresses_the_old_logs_and_the_next_run_finds_nothing(
    log_dir: Path,
) -> None:
    before = (log_dir / "app-2.log").read_bytes()
    with local_instance(FUNCTION, env={"LOG_DIR": str(log_dir)}) as instance:
        first = instance.send(make_request("POST", "/"))
        again = instance.send(make_request("POST", "/"))
    assert first.status == 200, first.text
    assert first.json()["compressed"] == ["app-1.log", "app-2.log"]
    assert gzip.decompress((log_dir / "app-2.log.gz").read_bytes()) == before
    # The second hour: nothing old is left uncompressed, and nothing is compressed twice.
    assert again.status == 200, again.text
    assert again.json()["compressed"] == []
    assert again.json()["left_alone"] == ["app.log"]


def test_a_directory_the_instance_cannot_see_is_a_clear_500(tmp_path: Path) -> None:
    result = invoke_local(
        FUNCTION, make_request("POST", "/"), env={"LOG_DIR": str(tmp_path / "nowhere")}
    )
    assert result.status == 500
    assert "is not a directory this function can see" in result.json()["error"]
