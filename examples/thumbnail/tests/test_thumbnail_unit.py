"""Unit: the function object with ``make_request``."""

from __future__ import annotations

import pytest
import thumbnail
from thumbkit import picture, size_of

from fissile.testing import call, make_request


def test_a_jpeg_shrinks_to_the_default_size_keeping_its_shape() -> None:
    result = call(thumbnail.main, make_request("POST", "/thumbnail", body=picture(1600, 900)))
    assert (result.status, result.content_type) == (200, "image/jpeg")
    assert result.header("x-original-size") == "1600x900"
    assert size_of(result.body) == (128, 72, "JPEG")


def test_size_from_the_query_and_other_formats() -> None:
    request = make_request("POST", "/thumbnail", body=picture(300, 600, "PNG"), query={"size": 50})
    assert size_of(call(thumbnail.main, request).body) == (25, 50, "JPEG")


def test_a_small_picture_is_not_enlarged() -> None:
    result = call(thumbnail.main, make_request("POST", "/thumbnail", body=picture(40, 30)))
    assert size_of(result.body)[:2] == (40, 30)


@pytest.mark.parametrize(
    ("body", "query", "status", "error"),
    [
        (b"", "", 400, "send a picture (JPEG, PNG, GIF or WebP) as the request body"),
        (b"hello", "", 400, "not a picture: cannot identify image file"),
        (picture(8, 8), "size=big", 400, "size must be an integer from 16 to 1024, not 'big'"),
        (picture(8, 8), "size=4096", 400, "size must be an integer from 16 to 1024, not '4096'"),
        (picture(8, 8, "BMP"), "", 415, "unsupported format BMP"),
    ],
)
def test_bad_input(body: bytes, query: str, status: int, error: str) -> None:
    result = call(thumbnail.main, make_request("POST", "/thumbnail", body=body, query=query))
    assert result.status == status
    assert result.json()["error"].startswith(error)
