"""Serves the demo page. The HTML is read once per instance, when the module loads."""

from pathlib import Path

import fissile

PAGE = (Path(__file__).parent / "index.html").read_text(encoding="utf-8")


def main(request):
    return fissile.Response(PAGE, content_type="text/html; charset=utf-8")
