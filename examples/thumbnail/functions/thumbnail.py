"""thumbnail: a picture in the body (JPEG, PNG, GIF, WebP), its thumbnail back as a JPEG.

``?size=N`` bounds the longer side (default 128, 16 to 1024); the aspect ratio is kept and a
picture already smaller is not enlarged. The answer's ``x-original-size`` header says what came
in. Pillow comes from the package's requirements.txt (fissile's builder installs it).
"""

import io

from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_SIZE = 128
SIZES = range(16, 1025)
FORMATS = {"JPEG", "PNG", "GIF", "WEBP"}


def main(request):
    if not request.body:
        return {"error": "send a picture (JPEG, PNG, GIF or WebP) as the request body"}, 400
    size_text = request.query.get("size", str(DEFAULT_SIZE))
    if not size_text.isdigit() or int(size_text) not in SIZES:
        return {"error": f"size must be an integer from 16 to 1024, not {size_text!r}"}, 400
    size = int(size_text)
    try:
        with Image.open(io.BytesIO(request.body)) as picture:
            if picture.format not in FORMATS:
                return {"error": f"unsupported format {picture.format}"}, 415
            original = f"{picture.width}x{picture.height}"
            picture.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, cheaply
            small = ImageOps.exif_transpose(picture).convert("RGB")
            small.thumbnail((size, size))
    except Image.DecompressionBombError as exc:
        return {"error": f"picture too large: {exc}"}, 413
    except (UnidentifiedImageError, OSError) as exc:
        return {"error": f"not a picture: {exc}"}, 400
    out = io.BytesIO()
    small.save(out, "JPEG", quality=85)
    headers = {"content-type": "image/jpeg", "x-original-size": original}
    return out.getvalue(), 200, headers
