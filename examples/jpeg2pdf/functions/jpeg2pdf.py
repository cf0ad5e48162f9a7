"""jpeg2pdf: turns the JPEG in the request's body into a one-page PDF. Deliberately sloppy, as
a first version often is: it trusts the upload.

- It lifts Pillow's decompression-bomb guard ("our users scan big posters") and accepts
  truncated files ("phones cut uploads short"). A few hundred bytes declaring a 60000x60000
  image then make it allocate and fill gigabytes: past its ``memory`` limit the kernel kills
  the instance, and the caller gets ``502 instance_died`` (``out of memory``).
- It does not check that the body is an image: anything else raises, and the caller gets
  ``500 function_error`` with Pillow's message (the instance survives that).

The platform's part: only the request that killed the instance fails; the next one, good or
bad, gets a new instance at once, and the other functions never notice.
"""

import io

from PIL import Image, ImageFile

Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = True


def main(request):
    image = Image.open(io.BytesIO(request.body))
    page = io.BytesIO()
    image.convert("RGB").save(page, "PDF", resolution=72.0)
    return page.getvalue(), 200, {"content-type": "application/pdf"}
