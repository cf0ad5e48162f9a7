"""Integration: the package in a real instance, as ``fissile up`` loads it."""

from __future__ import annotations

from pathlib import Path

from thumbkit import picture, size_of

from fissile.testing import invoke_local, make_request

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"


def test_thumbnail_in_an_instance() -> None:
    request = make_request("POST", "/thumbnail?size=64", body=picture(640, 480))
    result = invoke_local(FUNCTIONS, request, entrypoint="thumbnail.main")
    assert result.status == 200, result.text
    assert result.header("x-original-size") == "640x480"
    assert size_of(result.body) == (64, 48, "JPEG")
