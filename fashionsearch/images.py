"""Turning untrusted image bytes into an RGB picture the models can use, or a clear InvalidArgument.

Accepted: JPEG, PNG (including palette and alpha), WebP; greyscale, CMYK and 16-bit become RGB, transparent
pixels are put on white (catalogue photos have white backgrounds), EXIF orientation is applied.
Refused, each with a message a person understands: empty input, more bytes than the limit, anything that is not
one of the formats, truncated or corrupt data, more pixels than the limit (checked from the header, before any
pixel is decoded, so a small file declaring 20000x20000 pixels costs nothing), and images smaller than
`min_side` pixels on a side: a 1x1 image holds no product, and a confident answer for it would be a lie.

Large JPEG photos are decoded in draft mode, straight at a reduced scale (1/2, 1/4 or 1/8) that is still at
least twice the model's input size, so a 12-megapixel photo costs milliseconds instead of most of a second.
PNG and WebP have no such mode: a large one is decoded in full, then at once reduced by an integer factor to the
same size (at least twice the model's input) before any conversion copies it, so a batch never holds full-size
pictures. Their full-size decode is what makes an image "heavy" (`is_heavy`): fashionsearch.decode_threads runs
those one at a time per process.

`decode_pixels` is what the model services use: the same answer as a uint8 array, with a fast path for the common
case (a small colour or grey JPEG without EXIF orientation, like every catalogue image) that decodes with
libjpeg-turbo's TurboJPEG API through simplejpeg: 46 us instead of Pillow's 230 us for a 60x80 image, whose
per-image Python overhead dominates at that size. Both run libjpeg-turbo with the same settings (accurate integer
DCT, smooth chroma upsampling), so the pixels are the same bits: checked on all 39,838 dataset images and in
tests/unit/test_images.py. Anything else, and any error, takes the Pillow path, which owns the error messages.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

from fashionsearch import metrics
from fashionsearch.errors import InvalidArgument

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MIN_SIDE = 8
#: Above this many pixels a PNG or WebP costs tens of megabytes and a good part of a second to decode (it has no
#: reduced-scale decoding): a heavy image.
HEAVY_PIXELS = 4_000_000
FORMATS = ("JPEG", "PNG", "WEBP")
# Catalogue photos have white backgrounds, so transparency becomes white.
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class ImageLimits:
    """What a service accepts; every service reads these from its settings."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = DEFAULT_MIN_SIDE

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0 or self.min_side <= 0:
            raise ValueError(f"image limits must be positive, got {self}")


def decode_image(
    data: bytes,
    limits: ImageLimits = ImageLimits(),  # noqa: B008 - frozen, so a shared default is safe
    target_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode `data` into an RGB image; `target_size` (width, height) of the model enables JPEG draft mode.

    Raises InvalidArgument for every input the service must refuse.
    """
    if not data:
        raise InvalidArgument("image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InvalidArgument(f"image is {len(data)} bytes, more than the limit of {limits.max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            # A corrupt EXIF block makes Pillow warn ("Truncated File Read") while it reads the JPEG's dpi, which
            # we never use; the pixels are decoded, or refused, below.
            warnings.simplefilter("ignore", UserWarning)
            image: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise InvalidArgument("image bytes are not a JPEG, PNG or WebP image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard (about 89 megapixels) fired while reading the header.
        raise InvalidArgument(f"image has more than the limit of {limits.max_pixels} pixels") from None
    except (OSError, SyntaxError, ValueError) as bad:
        raise InvalidArgument(f"image header is corrupt: {bad}") from None

    _check_size(*image.size, limits)

    jpeg = image.format in ("JPEG", "MPO")  # MPO: phone cameras' multi-picture JPEG
    # Twice the larger model side in both directions, so any EXIF rotation still leaves enough pixels.
    side = 2 * max(target_size) if target_size is not None else 0
    if jpeg and side:
        image.draft("RGB", (side, side))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as bad:
        raise InvalidArgument(f"image data is truncated or corrupt ({image.format}: {bad})") from None
    if side and not jpeg:
        image = reduce_to(image, side)
    image = _apply_orientation(image)
    return to_rgb(image)


def reduce_to(image: Image.Image, side: int) -> Image.Image:
    """Shrink by the largest integer factor that keeps both sides at least `side` (what JPEG draft mode keeps)."""
    factor = min(image.width // side, image.height // side)
    if factor < 2:
        return image
    size = (image.width // factor, image.height // factor)
    if image.mode in ("P", "PA", "1") or image.mode.startswith("I;16"):
        # Averaging palette indices would mix unrelated colours; these modes are sampled instead.
        return image.resize(size, Image.Resampling.NEAREST)
    return image.reduce(factor)  # a box filter (alpha premultiplied), one pass over the pixels


def is_heavy(data: bytes) -> bool:
    """True for a PNG or WebP of more than HEAVY_PIXELS pixels (read from the header; bad data is not heavy)."""
    if data[:2] == b"\xff\xd8":  # JPEG: decoded at a reduced scale
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a decompression-bomb warning: decode_image refuses it, quickly
            width, height = Image.open(io.BytesIO(data), formats=FORMATS).size
    except Exception:  # noqa: BLE001 - whatever is wrong, decode_image says it (without a full decode)
        return False
    return width * height > HEAVY_PIXELS


def _check_size(width: int, height: int, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise InvalidArgument(
            f"image is {width}x{height} = {width * height} pixels, more than the limit of {limits.max_pixels}"
        )
    if min(width, height) < limits.min_side:
        raise InvalidArgument(f"image is {width}x{height} pixels; both sides must be at least {limits.min_side}")


# JPEG colour spaces TurboJPEG turns into RGB exactly as Pillow does (CMYK/YCCK go through Pillow's own inversion).
_FAST_JPEG_COLOURSPACES = ("YCbCr", "Gray")


def _decode_plain_jpeg(data: bytes, limits: ImageLimits, target_size: tuple[int, int] | None) -> np.ndarray | None:
    """The fast path of decode_pixels, or None when the image needs Pillow (or is bad: Pillow says why)."""
    if not data.startswith(b"\xff\xd8") or b"Exif" in data:  # EXIF may rotate the picture: Pillow applies it
        return None
    try:
        height, width, colourspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colourspace not in _FAST_JPEG_COLOURSPACES:
        return None
    if target_size is not None and max(width, height) > 2 * max(target_size):
        return None  # a large photo: Pillow's draft mode decodes it at a reduced scale
    _check_size(width, height, limits)
    try:
        # strict: a warning (truncated or corrupt data) is an error here, and Pillow then reports it.
        pixels: np.ndarray = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
        return pixels
    except ValueError:
        return None


@metrics.observe_decode
def decode_pixels(
    data: bytes,
    limits: ImageLimits = ImageLimits(),  # noqa: B008 - frozen, so a shared default is safe
    target_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """decode_image as a uint8 HxWx3 RGB array (what preprocess() takes), through the fast path when it applies.

    Raises InvalidArgument for every input the service must refuse, with decode_image's messages.
    """
    if data and len(data) <= limits.max_bytes:
        pixels = _decode_plain_jpeg(data, limits, target_size)
        if pixels is not None:
            return pixels
    return np.asarray(decode_image(data, limits, target_size), dtype=np.uint8)


#: EXIF orientations that turn the picture by 90 degrees (width and height swap).
_TURNED = (5, 6, 7, 8)


def displayed_size(data: bytes) -> tuple[int, int]:
    """(width, height) of the full picture as decode_image shows it (EXIF orientation applied), from the header.

    For data decode_image accepted: a picture decoded at a reduced scale (draft mode) is that much smaller, and
    a detector's boxes are scaled back to this size.
    """
    with Image.open(io.BytesIO(data), formats=FORMATS) as image:
        width, height = image.size
        try:
            # A JPEG without an APP1 "Exif" block has no orientation: skip parsing (the common case).
            jpeg_without_exif = data[:2] == b"\xff\xd8" and b"Exif" not in data
            orientation = 1 if jpeg_without_exif else image.getexif().get(0x0112, 1)
        except Exception:  # noqa: BLE001 - decode_image ignores an unreadable EXIF block too
            orientation = 1
    return (height, width) if orientation in _TURNED else (width, height)


def _apply_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as bad:  # noqa: BLE001 - a broken EXIF block must not cost the picture
        logger.debug("ignoring unreadable EXIF orientation: %s", bad)
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited onto white, 16-bit greyscale is scaled, not clipped."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255.0
        grey = np.clip(pixels * (255.0 / peak), 0, 255).round().astype(np.uint8)
        image = Image.fromarray(grey)
    elif image.mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float64), 0, 255).round().astype(np.uint8)
        image = Image.fromarray(grey)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_batch(
    items: list[bytes],
    limits: ImageLimits = ImageLimits(),  # noqa: B008 - frozen, so a shared default is safe
    target_size: tuple[int, int] | None = None,
) -> list[np.ndarray | InvalidArgument]:
    """decode_pixels for every item of a batch; a bad item becomes its InvalidArgument instead of failing the batch."""
    decoded: list[np.ndarray | InvalidArgument] = []
    for data in items:
        try:
            decoded.append(decode_pixels(data, limits, target_size))
        except InvalidArgument as bad:
            decoded.append(bad)
    return decoded
