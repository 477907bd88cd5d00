"""Image decoding: every accepted format becomes RGB, every bad input is a clear InvalidArgument."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fashionsearch.errors import InvalidArgument
from fashionsearch.images import (
    ImageLimits,
    decode_batch,
    decode_image,
    decode_pixels,
    displayed_size,
    is_heavy,
    to_rgb,
)
from testkit.images import large_png
from testkit.png_bytes import png_declaring


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def jpeg_bytes() -> bytes:
    return encode(noise(120, 160), "JPEG", quality=90)


# --- refused inputs -------------------------------------------------------------------------------------------


def test_zero_bytes_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        decode_image(b"")


def test_non_image_bytes_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="not a JPEG, PNG or WebP"):
        decode_image(b"this is a text file, not a photo\n" * 10)


def test_truncated_jpeg_is_refused(jpeg_bytes: bytes) -> None:
    with pytest.raises(InvalidArgument, match="truncated or corrupt"):
        decode_image(jpeg_bytes[: len(jpeg_bytes) // 2])


def test_png_signature_with_garbage_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)


def test_one_by_one_image_is_refused_with_the_minimum_side() -> None:
    with pytest.raises(InvalidArgument, match=r"1x1 pixels; both sides must be at least 8"):
        decode_image(encode(Image.new("RGB", (1, 1), "red"), "PNG"))


def test_min_side_is_configurable() -> None:
    image = decode_image(encode(Image.new("RGB", (1, 1), "red"), "PNG"), ImageLimits(min_side=1))
    assert image.size == (1, 1)
    assert image.getpixel((0, 0)) == (255, 0, 0)


def test_png_declaring_20000_by_20000_pixels_is_refused_from_its_header() -> None:
    data = png_declaring(20000, 20000)
    assert len(data) < 200
    with pytest.raises(InvalidArgument, match="pixels"):
        decode_image(data)


def test_pixel_limit_below_pillows_own_guard() -> None:
    data = png_declaring(8000, 6000)  # 48 MP: under Pillow's guard, over our default limit of 40 MP
    with pytest.raises(InvalidArgument, match="8000x6000 = 48000000 pixels, more than the limit of 40000000"):
        decode_image(data)
    with pytest.raises(InvalidArgument, match="more than the limit of 5000"):
        decode_image(encode(noise(100, 100), "PNG"), ImageLimits(max_pixels=5000))


def test_byte_limit(jpeg_bytes: bytes) -> None:
    with pytest.raises(InvalidArgument, match=f"image is {len(jpeg_bytes)} bytes, more than the limit of 100 bytes"):
        decode_image(jpeg_bytes, ImageLimits(max_bytes=100))


def test_default_byte_limit_is_10_mb() -> None:
    assert ImageLimits().max_bytes == 10 * 1024 * 1024
    with pytest.raises(InvalidArgument, match="more than the limit of 10485760 bytes"):
        decode_image(b"\xff\xd8" + b"\x00" * (10 * 1024 * 1024))


@pytest.mark.parametrize("fmt", ["BMP", "GIF", "TIFF"])
def test_formats_outside_the_contract_are_refused(fmt: str) -> None:
    with pytest.raises(InvalidArgument, match="not a JPEG, PNG or WebP"):
        decode_image(encode(noise(20, 20), fmt))


# --- accepted inputs ------------------------------------------------------------------------------------------


def test_jpeg(jpeg_bytes: bytes) -> None:
    image = decode_image(jpeg_bytes)
    assert image.mode == "RGB"
    assert image.size == (120, 160)


def test_webp() -> None:
    image = decode_image(encode(Image.new("RGB", (30, 40), (0, 200, 0)), "WEBP", lossless=True))
    assert image.mode == "RGB"
    assert image.getpixel((5, 5)) == (0, 200, 0)


def test_greyscale_becomes_rgb() -> None:
    image = decode_image(encode(Image.new("L", (20, 20), 77), "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((3, 3)) == (77, 77, 77)


def test_16_bit_greyscale_png_is_scaled_not_clipped() -> None:
    grey16 = Image.fromarray(np.full((20, 20), 32768, dtype=np.uint16))
    image = decode_image(encode(grey16, "PNG"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (128, 128, 128)


def test_cmyk_jpeg_becomes_rgb() -> None:
    cyan = Image.new("CMYK", (32, 32), (255, 0, 0, 0))
    image = decode_image(encode(cyan, "JPEG", quality=95))
    assert image.mode == "RGB"
    r, g, b = image.getpixel((16, 16))
    assert r < 30 and g > 225 and b > 225


def test_palette_png_with_transparency_goes_on_white() -> None:
    palette_image = Image.new("P", (20, 20), 1)
    palette_image.putpalette([0, 0, 0, 200, 0, 0] + [0, 0, 0] * 254)
    for x in range(10):
        for y in range(20):
            palette_image.putpixel((x, y), 0)
    data = encode(palette_image, "PNG", transparency=0)  # palette index 0 is fully transparent
    assert Image.open(io.BytesIO(data)).mode == "P"
    image = decode_image(data)
    assert image.mode == "RGB"
    assert image.getpixel((2, 2)) == (255, 255, 255)
    assert image.getpixel((15, 2)) == (200, 0, 0)


def test_rgba_png_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (20, 20), (0, 0, 255, 0))
    rgba.paste((0, 0, 255, 255), (10, 0, 20, 20))
    image = decode_image(encode(rgba, "PNG"))
    assert image.getpixel((2, 2)) == (255, 255, 255)
    assert image.getpixel((15, 2)) == (0, 0, 255)


def test_exif_orientation_is_applied() -> None:
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image = decode_image(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert image.size == (20, 40)
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # red went to the top
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize(("orientation", "shown"), [(None, (40, 20)), (1, (40, 20)), (3, (40, 20)), (6, (20, 40))])
def test_displayed_size_is_the_full_size_decode_images_shows(fmt: str, orientation: int | None, shown) -> None:  # noqa: ANN001
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    data = encode(Image.new("RGB", (40, 20), "red"), fmt, exif=exif.tobytes())
    assert displayed_size(data) == shown == decode_image(data).size


def test_twelve_megapixel_jpeg_is_decoded_in_draft_mode() -> None:
    photo = Image.new("RGB", (4000, 3000), (180, 40, 40))
    photo.paste((20, 20, 160), (2000, 0, 4000, 3000))
    data = encode(photo, "JPEG", quality=85)
    image = decode_image(data, target_size=(60, 80))
    # Draft mode decodes at 1/8 scale: still at least twice the model size, far fewer pixels than 12 MP.
    assert image.size == (500, 375)
    assert image.mode == "RGB"
    assert image.getpixel((100, 100))[0] > 150 and image.getpixel((400, 100))[2] > 130
    # Without a target size the full image is decoded.
    assert decode_image(data).size == (4000, 3000)


def test_to_rgb_keeps_rgb_images_as_they_are() -> None:
    image = Image.new("RGB", (4, 4))
    assert to_rgb(image) is image


def test_decode_batch_reports_bad_items_without_failing_the_batch(jpeg_bytes: bytes) -> None:
    results = decode_batch([jpeg_bytes, b"", b"nope", jpeg_bytes])
    assert isinstance(results[0], np.ndarray) and isinstance(results[3], np.ndarray)
    assert isinstance(results[1], InvalidArgument) and "empty" in results[1].message
    assert isinstance(results[2], InvalidArgument)


# --- robustness: nothing but a picture or InvalidArgument comes out ---------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_random_bytes_never_escape_as_other_errors(data: bytes) -> None:
    try:
        image = decode_image(data)
    except InvalidArgument:
        return
    assert image.mode == "RGB"


@settings(max_examples=150, deadline=None)
@given(
    fmt=st.sampled_from(["JPEG", "PNG", "WEBP"]),
    cut=st.integers(min_value=0, max_value=4000),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6),
)
def test_damaged_images_never_escape_as_other_errors(fmt: str, cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(encode(noise(40, 50, seed=1), fmt))
    for position, value in flips:
        data[position % len(data)] = value
    data = data[: max(1, len(data) - cut)]
    try:
        image = decode_image(bytes(data))
    except InvalidArgument:
        return
    assert image.mode == "RGB"


def test_multi_picture_jpeg_from_phone_cameras_uses_draft_mode_too() -> None:
    front, back = Image.new("RGB", (2000, 1600), (250, 0, 0)), Image.new("RGB", (2000, 1600), (0, 0, 250))
    buffer = io.BytesIO()
    front.save(buffer, format="MPO", save_all=True, append_images=[back])
    image = decode_image(buffer.getvalue(), target_size=(60, 80))
    assert image.size == (250, 200)  # 1/8 scale, first picture
    assert image.getpixel((10, 10))[0] > 240


# --- decode_pixels: the services' fast path gives decode_image's answer, bit for bit ---------------------------


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(noise(40, 20, seed=3), "JPEG", quality=95, exif=exif.tobytes())


SAME_PIXELS_CASES = {
    "jpeg 4:2:0": lambda: encode(noise(60, 80), "JPEG", quality=90),
    "jpeg 4:4:4": lambda: encode(noise(60, 80), "JPEG", quality=90, subsampling=0),
    "jpeg 4:2:2": lambda: encode(noise(61, 79), "JPEG", quality=75, subsampling=1),
    "jpeg progressive": lambda: encode(noise(60, 80), "JPEG", quality=85, progressive=True),
    "jpeg optimized, odd size": lambda: encode(noise(33, 17), "JPEG", quality=60, optimize=True),
    "jpeg grey": lambda: encode(noise(60, 80).convert("L"), "JPEG", quality=90),
    "jpeg cmyk (Pillow path)": lambda: encode(noise(60, 80).convert("CMYK"), "JPEG", quality=90),
    "jpeg with exif orientation (Pillow path)": _exif_rotated_jpeg,
    "png": lambda: encode(noise(60, 80), "PNG"),
    "webp": lambda: encode(noise(60, 80), "WEBP", lossless=True),
    "large jpeg (Pillow draft path)": lambda: encode(noise(1200, 1600), "JPEG", quality=80),
}


@pytest.mark.parametrize("make", SAME_PIXELS_CASES.values(), ids=SAME_PIXELS_CASES.keys())
def test_decode_pixels_gives_the_same_bits_as_decode_image(make) -> None:  # noqa: ANN001
    data = make()
    expected = np.asarray(decode_image(data, target_size=(60, 80)))
    pixels = decode_pixels(data, target_size=(60, 80))
    assert pixels.dtype == np.uint8 and pixels.shape == expected.shape
    np.testing.assert_array_equal(pixels, expected)


BAD_INPUTS = {
    "empty": (b"", ImageLimits()),
    "not an image": (b"hello" * 40, ImageLimits()),
    "truncated jpeg": (encode(noise(120, 160), "JPEG", quality=90)[:1500], ImageLimits()),
    "jpeg below min side": (encode(noise(6, 40), "JPEG"), ImageLimits()),
    "jpeg over the pixel limit": (encode(noise(60, 80), "JPEG"), ImageLimits(max_pixels=1000)),
    "jpeg over the byte limit": (encode(noise(60, 80), "JPEG"), ImageLimits(max_bytes=100)),
}


@pytest.mark.parametrize(("data", "limits"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_decode_pixels_refuses_with_decode_images_message(data: bytes, limits: ImageLimits) -> None:
    with pytest.raises(InvalidArgument) as slow:
        decode_image(data, limits, (60, 80))
    with pytest.raises(InvalidArgument) as fast:
        decode_pixels(data, limits, (60, 80))
    assert fast.value.message == slow.value.message


@settings(max_examples=200, deadline=None)
@given(
    cut=st.integers(min_value=0, max_value=3000),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6),
)
def test_damaged_jpegs_get_the_same_outcome_on_both_paths(cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(encode(noise(40, 50, seed=1), "JPEG", quality=90))
    for position, value in flips:
        data[position % len(data)] = value
    data = bytes(data[: max(1, len(data) - cut)])
    try:
        expected = np.asarray(decode_image(data, target_size=(60, 80)))
    except InvalidArgument as slow:
        with pytest.raises(InvalidArgument) as fast:
            decode_pixels(data, target_size=(60, 80))
        assert fast.value.message == slow.message
        return
    np.testing.assert_array_equal(decode_pixels(data, target_size=(60, 80)), expected)


def test_decode_pixels_matches_decode_image_on_dataset_images(data_dir: Path) -> None:
    images = sorted((data_dir / "images").glob("*.jpg"))[::40][:1000]  # an even spread of 1,000 files
    for path in images:
        data = path.read_bytes()
        np.testing.assert_array_equal(
            decode_pixels(data, target_size=(60, 80)), np.asarray(decode_image(data, target_size=(60, 80))), path.name
        )


# ---- large PNG and WebP: decoded in full, reduced at once ----------------------------------------------------------


@pytest.fixture(scope="module")
def nine_megapixel_png() -> bytes:
    return large_png(3000, 3000)


def test_a_large_png_is_reduced_as_it_is_decoded(nine_megapixel_png: bytes) -> None:
    assert len(nine_megapixel_png) < 200_000 and is_heavy(nine_megapixel_png)
    pixels = decode_pixels(nine_megapixel_png, target_size=(60, 80))
    # The largest integer factor keeping both sides at least twice the larger model side (like JPEG draft mode).
    assert pixels.shape == (167, 167, 3)  # 3000 / 18, rounded up
    full = np.asarray(decode_image(nine_megapixel_png).resize((167, 167), Image.Resampling.BOX))
    assert np.abs(pixels.astype(int) - full.astype(int)).mean() < 2  # the same picture
    assert decode_image(nine_megapixel_png).size == (3000, 3000)  # without a target size: full size


def test_reduced_transparent_and_palette_pngs_keep_their_colours() -> None:
    rgba = Image.new("RGBA", (2400, 2400), (0, 0, 255, 0))  # transparent blue: must become white, not blue
    rgba.paste((200, 0, 0, 255), (1200, 0, 2400, 2400))
    image = decode_image(encode(rgba, "PNG"), target_size=(60, 80))
    assert image.size == (160, 160)
    assert image.getpixel((10, 10)) == (255, 255, 255) and image.getpixel((150, 10)) == (200, 0, 0)
    palette = rgba.convert("RGB").quantize(4)
    image = decode_image(encode(palette, "PNG"), target_size=(60, 80))
    assert image.size == (160, 160) and image.getpixel((150, 10)) == (200, 0, 0)


def test_heavy_images_are_large_pngs_and_webps_only(nine_megapixel_png: bytes, jpeg_bytes: bytes) -> None:
    assert is_heavy(encode(Image.new("RGB", (2500, 2000)), "WEBP"))
    assert not is_heavy(encode(Image.new("RGB", (2000, 2000)), "PNG"))  # 4 MP: not above HEAVY_PIXELS
    assert not is_heavy(encode(Image.new("RGB", (4000, 3000)), "JPEG"))  # draft mode
    assert not is_heavy(jpeg_bytes) and not is_heavy(b"") and not is_heavy(b"\x89PNG garbage")
    assert not is_heavy(png_declaring(20000, 20000))  # refused from its header, never decoded


def test_a_batch_of_large_pngs_never_holds_their_full_size_decodes() -> None:
    """Peak memory of decode_batch over four 16-megapixel PNGs, in a fresh process: about one full-size decode
    (48 MB), not four (192 MB and more, as when every item was kept at full size until the batch was done)."""
    script = (
        "import resource, sys\n"
        "from fashionsearch.images import decode_batch\n"
        "from testkit.images import large_png\n"
        "items = [large_png(4000, 4000, seed=i) for i in range(4)]\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "decoded = decode_batch(items, target_size=(60, 80))\n"
        "assert all(d.shape == (160, 160, 3) for d in decoded), [d.shape for d in decoded]\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    growth_mb = float(done.stdout.strip())
    assert growth_mb < 120, f"decoding the batch grew the process by {growth_mb:.0f} MB"
