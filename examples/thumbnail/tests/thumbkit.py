"""Pictures for thumbnail's tests."""

from __future__ import annotations

import io

from PIL import Image


def picture(width: int, height: int, kind: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "orange").save(buffer, kind)
    return buffer.getvalue()


def size_of(data: bytes) -> tuple[int, int, str | None]:
    with Image.open(io.BytesIO(data)) as image:
        return image.width, image.height, image.format
