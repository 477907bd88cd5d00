"""The products a detector found, cut out of the photo as the classifier and embedder expect to see them.

The photo is decoded once here (a large JPEG in draft mode, at a reduced scale that keeps at least DECODE_SIDE
pixels a side, plenty for products that fill a part of it); the detector's boxes are in the photo's full-size
frame and are scaled to the decoded one. Each product is cut out as fashionsearch.main_product frames it (with a
margin, on white at the catalogue photos' 3:4, never stretched, enlarged when tiny) and encoded as a high-quality
JPEG for the model services; crop=auto chooses what to read by the same module's rule.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from fashionsearch import main_product
from fashionsearch.detection import Detection
from fashionsearch.images import ImageLimits, decode_image, displayed_size

#: The decoded photo keeps at least this many pixels a side (JPEG draft mode reduces by up to 8 above it).
DECODE_SIDE = 1024


@dataclass(frozen=True)
class Photo:
    """A decoded photo (maybe at a reduced scale) and its full size as shown, the frame of the detector's boxes."""

    image: Image.Image
    size: tuple[int, int]


def decode_photo(data: bytes, limits: ImageLimits) -> Photo:
    """The photo, decoded once; InvalidArgument, with the services' messages, for anything they would refuse."""
    image = decode_image(data, limits, target_size=(DECODE_SIDE // 2, DECODE_SIDE // 2))
    return Photo(image, displayed_size(data))


def decode_photo_checked(data: bytes, limits: ImageLimits) -> tuple[Photo, bool]:
    """decode_photo, and whether the photo is a packshot by its pixels alone (main_product.is_packshot): one
    worker-thread hop for both."""
    photo = decode_photo(data, limits)
    # Reduced by Pillow to the rule's sample size first (main_product.SAMPLE_SIDE): its whole border is read too, and a
    # 600x800 photo is then checked in a fraction of the time.
    factor = min(photo.image.size) // main_product.SAMPLE_SIDE
    small = photo.image.reduce(factor) if factor > 1 else photo.image
    return photo, main_product.is_packshot(small)


def cut_out(photo: Photo, detections: Sequence[Detection], mirrored: bool = False) -> list[bytes]:
    """One encoded JPEG per detection, in order; `mirrored`: followed by their mirror images, in the same order
    (outfit search's flip test, services/gateway/readings.py)."""
    cuts = [main_product.cut_out(photo.image, detection, photo.size) for detection in detections]
    if mirrored:
        cuts += [cut.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for cut in cuts]
    return [_encode(cut) for cut in cuts]


@dataclass(frozen=True)
class MainProduct:
    """What crop=auto reads of a scene: the main product cut out, and whether beside the whole photo."""

    cut: bytes
    beside_whole: bool


def main_product_cut(photo: Photo, detections: Sequence[Detection]) -> MainProduct | None:
    """What crop=auto reads (fashionsearch.main_product): the main product cut out, None for the whole photo alone."""
    best = main_product.main_product(photo.image, detections, photo.size)
    if best is None:
        return None
    cut = _encode(main_product.cut_out(photo.image, best, photo.size))
    return MainProduct(cut, main_product.read_beside_whole(detections, photo.size))


def _encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=main_product.JPEG_QUALITY)
    return buffer.getvalue()
