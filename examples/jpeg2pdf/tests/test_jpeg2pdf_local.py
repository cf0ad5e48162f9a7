"""Integration: the package's functions in a real instance (the loader and response encoding
of ``fissile up``), without a platform."""

from __future__ import annotations

from pathlib import Path

from jpegkit import bomb, jpeg

from fissile.testing import invoke_local, local_instance, make_request

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"


def test_the_converter_in_an_instance() -> None:
    with local_instance(FUNCTIONS, entrypoint="jpeg2pdf.main", function="jpeg2pdf") as instance:
        pdf = instance.post("/jpeg2pdf", body=jpeg())
        assert (pdf.status, pdf.content_type) == (200, "application/pdf")
        assert pdf.body.startswith(b"%PDF-")
        broken = instance.post("/jpeg2pdf", body=b"\xff\xd8 not really")
        assert broken.status == 500
        assert broken.json()["error"]["type"] == "UnidentifiedImageError"
        # A raised exception does not end the instance: the next call is served by it.
        assert instance.post("/jpeg2pdf", body=jpeg()).status == 200
        assert "UnidentifiedImageError" in instance.output()


def test_jpeginfo_in_an_instance() -> None:
    request = make_request("POST", "/jpeginfo", body=bomb())
    result = invoke_local(FUNCTIONS, request, entrypoint="jpeginfo.main")
    assert result.status == 413
