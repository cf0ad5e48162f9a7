"""jpeginfo: the careful neighbour. Reads only a JPEG's header (no pixels are decoded), keeps
Pillow's decompression-bomb guard, and answers bad input with a precise 400."""

import io

from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 50_000_000  # what a 50-megapixel camera makes; more is not a photo


def main(request):
    if not request.body:
        return {"error": "send a JPEG as the request body"}, 400
    try:
        with Image.open(io.BytesIO(request.body)) as image:
            width, height = image.size
            kind = image.format
    except Image.DecompressionBombError as exc:
        return {"error": f"too large to be a photo: {exc}"}, 413
    except (UnidentifiedImageError, OSError) as exc:
        return {"error": f"not an image: {exc}"}, 400
    if kind != "JPEG":
        return {"error": f"expected a JPEG, got {kind}"}, 415
    if width * height > MAX_PIXELS:
        return {"error": f"{width}x{height} is more than {MAX_PIXELS} pixels"}, 413
    return {"format": kind, "width": width, "height": height}
