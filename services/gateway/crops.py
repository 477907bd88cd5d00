"""The products a detector found, cut out of the photo as the classifier and embedder expect to see them.

The photo is decoded once here (a large JPEG in draft mode, at a reduced scale that keeps at least DECODE_SIDE
pixels a side, plenty for products that fill a part of it); the detector's boxes are in the photo's full-size
frame and are scaled to the decoded one. Each product is cut with a margin (fashionsearch.detection.crop_box),
put on white at the catalogue photos' 3:4 aspect (the models were trained on packshots: a product centred on white,
never stretched), enlarged when tiny, and encoded as a high-quality JPEG for the model services.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from fashionsearch.detection import Detection, crop_box
from fashionsearch.images import ImageLimits, decode_image, displayed_size

#: The decoded photo keeps at least this many pixels a side (JPEG draft mode reduces by up to 8 above it).
DECODE_SIDE = 1024
#: Width / height of the catalogue's photos (60x80 and their larger originals).
CATALOGUE_ASPECT = 3 / 4
#: A cut-out smaller than this on its short side is enlarged to it (the services refuse images under 8 pixels).
MIN_SIDE = 64
WHITE = (255, 255, 255)
QUALITY = 95
#: crop=auto reads the whole photo when the main product's box covers at least this share of it: such a photo is
#: framed around the product already (a packshot). On catalogue packshots cutting out lost 3.0 points of articleType
#: accuracy, 2.5 with this rule; the scene rows did not move (bench/README.md, outfit search).
WHOLE_PHOTO_SHARE = 0.5


@dataclass(frozen=True)
class Photo:
    """A decoded photo (maybe at a reduced scale) and its full size as shown, the frame of the detector's boxes."""

    image: Image.Image
    size: tuple[int, int]


def decode_photo(data: bytes, limits: ImageLimits) -> Photo:
    """The photo, decoded once; InvalidArgument, with the services' messages, for anything they would refuse."""
    image = decode_image(data, limits, target_size=(DECODE_SIDE // 2, DECODE_SIDE // 2))
    return Photo(image, displayed_size(data))


def cut_out(photo: Photo, detections: Sequence[Detection]) -> list[bytes]:
    """One encoded JPEG per detection, in order."""
    sx, sy = photo.image.width / photo.size[0], photo.image.height / photo.size[1]
    crops = []
    for detection in detections:
        box = crop_box(detection.scaled(sx, sy), photo.image.width, photo.image.height)
        crops.append(_encode(_on_white(photo.image.crop(box))))
    return crops


def _on_white(crop: Image.Image) -> Image.Image:
    width, height = crop.size
    if width / height > CATALOGUE_ASPECT:
        canvas_size = (width, round(width / CATALOGUE_ASPECT))
    else:
        canvas_size = (max(width, round(height * CATALOGUE_ASPECT)), height)
    canvas = Image.new("RGB", canvas_size, WHITE)
    canvas.paste(crop, ((canvas_size[0] - width) // 2, (canvas_size[1] - height) // 2))
    if min(canvas.size) < MIN_SIDE:
        scale = MIN_SIDE / min(canvas.size)
        canvas = canvas.resize((round(canvas.width * scale), round(canvas.height * scale)), Image.Resampling.BICUBIC)
    return canvas


def _encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=QUALITY)
    return buffer.getvalue()
