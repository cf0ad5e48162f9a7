"""System: the spec directory on a throw-away ``fissile up``; its builder installs Pillow from
the package's requirements.txt (the build log says so), and the route answers thumbnails."""

from __future__ import annotations

import pytest
from thumbkit import picture, size_of

from fissile.testing import Platform

pytestmark = pytest.mark.slow  # a platform and a Pillow build: ~10 s


def test_thumbnails_through_the_route(fissile_platform: Platform) -> None:
    response = fissile_platform.post("/thumbnail?size=100", content=picture(1000, 500))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert size_of(response.content) == (100, 50, "JPEG")
    bad = fissile_platform.post("/thumbnail", content=b"not a picture")
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("not a picture:")


def test_pillow_came_from_the_packages_build(fissile_platform: Platform) -> None:
    log = fissile_platform.cli("pkg", "info", "--name", "thumbnail-code").out
    assert "pip install -r" in log and "requirements.txt" in log
    assert "build succeeded" in log
