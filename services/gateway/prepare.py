"""Decode a large photo once in the gateway instead of twice in the services.

Every Search sends the photo to both the classifier and the embedder, and each decodes it. For a catalogue-sized
image that costs nothing; for a 12-megapixel phone photo it doubles the costliest step (JPEG entropy decoding,
tens of milliseconds even in draft mode) and copies megabytes to each service. So a JPEG above
GATEWAY_SHRINK_ABOVE_PIXELS is decoded here, once, in draft mode at a reduced scale that keeps at least
GATEWAY_SHRINK_SIDE pixels on its shorter side (set it to at least twice the largest model input side, which is
what the services' own draft decoding keeps), EXIF orientation applied, and re-encoded as a small high-quality
JPEG. The models see the photo at the resolution they would have used anyway, up to JPEG noise at quality 95.

Anything else (small images, PNG, WebP, undecodable or over-limit data) passes through unchanged, so the
services still validate it and give their usual errors.
"""

from __future__ import annotations

import io
import logging

from PIL import Image, ImageOps

from fashionsearch.images import DEFAULT_MAX_PIXELS, to_rgb

logger = logging.getLogger(__name__)

QUALITY = 95


def shrink_photo(data: bytes, *, above_pixels: int, side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """`data`, or a smaller JPEG of the same photo when `data` is a JPEG of more than `above_pixels` pixels."""
    if above_pixels <= 0:
        return data
    try:
        image = Image.open(io.BytesIO(data), formats=("JPEG",))
        width, height = image.size
        if width * height <= above_pixels or width * height > max_pixels:
            return data
        image.draft("RGB", (side, side))
        image.load()
        image = to_rgb(ImageOps.exif_transpose(image))
        if image.width * image.height >= width * height:  # draft could not reduce it: nothing gained
            return data
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=QUALITY)
    except Exception as bad:  # noqa: BLE001 - the services decode it themselves and report what is wrong
        logger.debug("not shrinking the photo: %s", bad)
        return data
    return buffer.getvalue()
