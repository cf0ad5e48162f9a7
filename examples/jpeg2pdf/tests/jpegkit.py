"""What jpeg2pdf's tests share: JPEGs good and bad. (conftest.py makes the functions' modules
importable and gives the platform.)"""

from __future__ import annotations

import io
import struct

from PIL import Image


def jpeg(width: int = 64, height: int = 48, color: str = "teal") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "JPEG")
    return buffer.getvalue()


def bomb(width: int = 60000, height: int = 60000) -> bytes:
    """A real 16x16 JPEG whose frame header claims ``width``x``height``: a few hundred bytes
    that a trusting decoder turns into gigabytes."""
    data = bytearray(jpeg(16, 16))
    at = 2
    while at < len(data):
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2 : at + 4])[0]
        if marker in (0xC0, 0xC2):  # start of frame: precision, height, width
            data[at + 5 : at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        at += 2 + length
    raise AssertionError("no start-of-frame marker")
