"""Large search photos are decoded once in the gateway: smaller bytes, same picture for the models."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from fashionsearch.images import ImageLimits, decode_image
from fashionsearch.model_contract import InputSpec, preprocess
from fashionsearch.store.brute import BruteForceIndex
from services.gateway.domain import SearchOptions
from services.gateway.limits import Limits
from services.gateway.prepare import may_shrink, shrink_photo
from services.gateway.service import GatewayService
from services.gateway.settings import Settings
from testkit.gateway_fakes import FakeClassifier, FakeEmbedder

SPEC = InputSpec(name="image", height=80, width=60, scale=1 / 255, mean=(0, 0, 0), std=(1, 1, 1), resize="stretch")


def photo(width: int, height: int, fmt: str = "JPEG", orientation: int | None = None) -> bytes:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([128 + 100 * np.sin(x / 150), 128 + 100 * np.cos(y / 110), (x + y) % 256], -1)
    pixels[height // 3 : height // 2, width // 4 : width // 2] = (20, 30, 140)
    image = Image.fromarray(pixels.astype(np.uint8))
    buffer = io.BytesIO()
    params = {"quality": 90} if fmt == "JPEG" else {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        params["exif"] = exif.tobytes()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def large() -> bytes:
    return photo(3000, 2000)


def test_a_large_jpeg_becomes_a_small_one_with_enough_pixels(large):
    small = shrink_photo(large, above_pixels=2_000_000, side=256)
    assert len(small) < len(large) / 5
    image = Image.open(io.BytesIO(small))
    assert image.format == "JPEG" and min(image.size) >= 256 and image.size[0] / image.size[1] == pytest.approx(1.5)


def test_the_models_see_the_same_picture(large):
    """What preprocessing makes of the shrunk photo matches the original's, up to JPEG noise."""
    direct = preprocess([decode_image(large, ImageLimits(), (SPEC.width, SPEC.height))], SPEC)
    small = shrink_photo(large, above_pixels=2_000_000, side=256)
    shrunk = preprocess([decode_image(small, ImageLimits(), (SPEC.width, SPEC.height))], SPEC)
    difference = np.abs(direct - shrunk)
    assert float(difference.mean()) < 0.01 and float(difference.max()) < 0.1


def test_exif_orientation_is_applied_before_the_exif_is_dropped():
    small = shrink_photo(photo(2400, 1600, orientation=6), above_pixels=1_000_000, side=256)
    image = Image.open(io.BytesIO(small))
    assert image.size[1] > image.size[0]  # rotated to portrait
    assert image.getexif().get(0x0112) in (None, 1)


@pytest.mark.parametrize(
    ("data", "above"),
    [
        (photo(600, 800), 2_000_000),  # small: nothing to gain
        (photo(2000, 1500, fmt="PNG"), 4_000_000),  # a PNG under the threshold
        (b"\xff\xd8\xff\xe0 not really a jpeg", 1),  # broken: the services report it
        (b"", 1),
        (photo(2000, 1500), 0),  # turned off
    ],
    ids=["small", "png", "broken", "empty", "off"],
)
def test_everything_else_passes_through_unchanged(data, above):
    assert shrink_photo(data, above_pixels=above, side=256) is data


@pytest.mark.parametrize(
    ("data", "above", "may"),
    [
        (photo(600, 800), 2_000_000, False),  # the usual search photo: read on the event loop, no thread
        (photo(600, 800), 480_000, False),  # exactly at the threshold: shrink_photo keeps it too
        (photo(600, 800), 479_999, True),
        (photo(2000, 1500, fmt="PNG"), 4_000_000, True),  # not a JPEG: Pillow decides, in the worker thread
        (b"\xff\xd8\xff\xe0 not really a jpeg", 1, True),
        (photo(2000, 1500), 0, False),  # turned off
    ],
    ids=["small", "at-threshold", "above", "png", "broken", "off"],
)
def test_may_shrink_is_false_only_where_shrink_photo_passes_the_photo_through(data, above, may):
    assert may_shrink(data, above) is may
    if not may:
        assert shrink_photo(data, above_pixels=above, side=256) is data


def test_may_shrink_a_large_jpeg(large):
    assert may_shrink(large, 2_000_000)
    assert shrink_photo(large, above_pixels=2_000_000, side=256) is not large


def test_a_large_png_is_decoded_once_here_and_sent_on_small_and_lossless():
    """A PNG has no reduced-scale decoding: the gateway decodes it once (not once per model service), reduces it,
    puts transparent pixels on white as the services would, and sends a small PNG of the same picture."""
    rgba = Image.open(io.BytesIO(photo(3000, 2000, fmt="PNG"))).convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 1500, 400))  # a transparent band
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    large_png = buffer.getvalue()
    small = shrink_photo(large_png, above_pixels=2_000_000, side=256)
    image = Image.open(io.BytesIO(small))
    assert image.format == "PNG" and image.mode == "RGB" and image.size == (429, 286)  # 3000/7, 2000/7, rounded up
    assert image.getpixel((10, 10)) == (255, 255, 255)
    direct = preprocess([decode_image(large_png, ImageLimits(), (SPEC.width, SPEC.height))], SPEC)
    shrunk = preprocess([decode_image(small, ImageLimits(), (SPEC.width, SPEC.height))], SPEC)
    difference = np.abs(direct - shrunk)
    assert float(difference.mean()) < 0.01 and float(difference.max()) < 0.1


def test_over_the_pixel_limit_passes_through_for_the_services_to_refuse(large):
    assert shrink_photo(large, above_pixels=1_000_000, side=256, max_pixels=5_000_000) is large


class RecordingClassifier(FakeClassifier):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    async def classify(self, data: bytes):
        self.sizes.append(len(data))
        return await super().classify(b"img:" + data[:8])


def test_search_sends_the_shrunk_photo_to_the_models(large):
    classifier = RecordingClassifier()
    service = GatewayService(
        classifier, FakeEmbedder(), BruteForceIndex(), Limits(shrink_above_pixels=2_000_000, shrink_side=256)
    )
    asyncio.run(service.search(large, SearchOptions()))
    assert classifier.sizes and classifier.sizes[0] < len(large) / 5


def test_settings():
    from_env = Settings.from_env({})
    assert (from_env.shrink_above_pixels, from_env.shrink_side) == (2_000_000, 256)
    custom = Settings.from_env({"GATEWAY_SHRINK_ABOVE_PIXELS": "0", "GATEWAY_SHRINK_SIDE": "512"})
    assert (custom.shrink_above_pixels, custom.shrink_side) == (0, 512)
    assert from_env.max_concurrent_rpcs == 256
    assert Settings.from_env({"GATEWAY_MAX_CONCURRENT_RPCS": "8"}).max_concurrent_rpcs == 8
