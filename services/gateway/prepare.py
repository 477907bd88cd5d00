"""Decode a large photo once in the gateway instead of twice in the services.

Every Search sends the photo to both the classifier and the embedder, and each decodes it. For a catalogue-sized
image that costs nothing; for a 12-megapixel phone photo it doubles the costliest step (JPEG entropy decoding,
tens of milliseconds even in draft mode) and copies megabytes to each service. So a JPEG above
GATEWAY_SHRINK_ABOVE_PIXELS is decoded here, once, in draft mode at a reduced scale that keeps at least
GATEWAY_SHRINK_SIDE pixels on its shorter side (set it to at least twice the largest model input side, which is
what the services' own draft decoding keeps), EXIF orientation applied, and re-encoded as a small high-quality
JPEG. The models see the photo at the resolution they would have used anyway, up to JPEG noise at quality 95.

A PNG or WebP above the threshold has no reduced-scale decoding: it is decoded here in full, once instead of once
in each service, reduced at once by an integer factor to keep at least GATEWAY_SHRINK_SIDE pixels a side, put on
white where transparent (as the services would), and sent on as a small lossless PNG.

Anything else (small images, undecodable or over-limit data) passes through unchanged, so the services still
validate it and give their usual errors. `may_shrink` tells from a JPEG's header alone (microseconds) that a photo
will pass through, so the gateway reads such photos without a worker thread (bench/README.md).
"""

from __future__ import annotations

import io
import logging

import simplejpeg
from PIL import Image, ImageOps

from fashionsearch.images import DEFAULT_MAX_PIXELS, FORMATS, reduce_to, to_rgb

logger = logging.getLogger(__name__)

QUALITY = 95


def may_shrink(data: bytes, above_pixels: int) -> bool:
    """False when shrink_photo(data, above_pixels=above_pixels, ...) certainly returns `data` unchanged: shrinking is
    off, or a JPEG's header says it has at most `above_pixels` pixels. True when it may shrink it, or only Pillow can
    tell (other formats, an unreadable header).

    About 2 us on the event loop, where the worker-thread hop shrink_photo needs cost about 0.1 ms of CPU for every
    search, almost all of them with a small JPEG (bench/README.md, "One trunk pass per photo and int8").
    """
    if above_pixels <= 0:
        return False
    if not data.startswith(b"\xff\xd8"):
        return True
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:  # not a JPEG libjpeg-turbo can read: shrink_photo (Pillow) decides
        return True
    return int(width) * int(height) > above_pixels


def shrink_photo(data: bytes, *, above_pixels: int, side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """`data`, or a smaller JPEG of the same photo when `data` is a JPEG of more than `above_pixels` pixels."""
    if above_pixels <= 0:
        return data
    try:
        image: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = image.size
        if width * height <= above_pixels or width * height > max_pixels:
            return data
        jpeg = image.format == "JPEG"
        if jpeg:
            image.draft("RGB", (side, side))
        image.load()
        if not jpeg:
            image = reduce_to(image, side)
        image = to_rgb(ImageOps.exif_transpose(image))
        if image.width * image.height >= width * height:  # it could not be reduced: nothing gained
            return data
        buffer = io.BytesIO()
        if jpeg:
            image.save(buffer, format="JPEG", quality=QUALITY)
        else:
            image.save(buffer, format="PNG", compress_level=1)
    except Exception as bad:  # noqa: BLE001 - the services decode it themselves and report what is wrong
        logger.debug("not shrinking the photo: %s", bad)
        return data
    return buffer.getvalue()
