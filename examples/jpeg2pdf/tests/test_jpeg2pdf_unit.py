"""Unit: both functions called in the test's process. The sloppy converter is only given
inputs that cannot hurt the test's own process (no bombs here: see the system test)."""

from __future__ import annotations

import io

import jpeg2pdf
import jpeginfo
from jpegkit import bomb, jpeg
from PIL import Image

from fissile.testing import call, make_request


def test_a_jpeg_becomes_a_one_page_pdf() -> None:
    result = call(jpeg2pdf.main, make_request("POST", "/jpeg2pdf", body=jpeg(64, 48)))
    assert result.status == 200
    assert result.content_type == "application/pdf"
    assert result.body.startswith(b"%PDF-")
    assert result.body.count(b"/Type /Page\n") == 1


def test_the_sloppy_converter_answers_garbage_with_a_500() -> None:
    result = call(
        jpeg2pdf.main, make_request("POST", "/jpeg2pdf", body=b"not a jpeg"), raise_errors=False
    )
    assert result.status == 500
    error = result.json()["error"]
    assert (error["code"], error["type"]) == ("function_error", "UnidentifiedImageError")


def test_jpeginfo_reads_the_header_only() -> None:
    result = call(jpeginfo.main, make_request("POST", "/jpeginfo", body=jpeg(640, 480)))
    assert result.json() == {"format": "JPEG", "width": 640, "height": 480}


def test_jpeginfo_refuses_what_would_kill_the_converter() -> None:
    too_big = call(jpeginfo.main, make_request("POST", "/jpeginfo", body=bomb()))
    assert too_big.status == 413
    # Pillow's own guard says "too large to be a photo: ..."; with jpeg2pdf imported into this
    # process too, it is off (jpeg2pdf lifts it globally) and jpeginfo's own check answers.
    assert "pixels" in too_big.json()["error"]
    garbage = call(jpeginfo.main, make_request("POST", "/jpeginfo", body=b"GIF89a..."))
    assert garbage.status == 400
    assert garbage.json()["error"].startswith("not an image:")
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, "PNG")
    wrong = call(jpeginfo.main, make_request("POST", "/jpeginfo", body=png.getvalue()))
    assert (wrong.status, wrong.json()) == (415, {"error": "expected a JPEG, got PNG"})
    empty = call(jpeginfo.main, make_request("POST", "/jpeginfo"))
    assert (empty.status, empty.json()) == (400, {"error": "send a JPEG as the request body"})
