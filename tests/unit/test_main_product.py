"""What crop=auto reads: a packshot whole, a scene's main product cut out (fashionsearch.main_product)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fashionsearch import main_product
from fashionsearch.detection import Detection

SMALL = Detection(20, 30, 20, 20, "watch", 0.9)  # 400 of 60x80 = 4800 pixels: well under half


def packshot(width: int = 60, height: int = 80) -> np.ndarray:
    """A product on the catalogue's white, touching the bottom edge (as a dress or a model's photo may)."""
    pixels = np.full((height, width, 3), 250, np.uint8)
    pixels[height // 6 :, width // 4 : 3 * width // 4] = (30, 40, 120)
    return pixels


def test_a_packshot_is_read_whole_even_when_its_product_is_small_in_the_box():
    pixels = packshot()
    assert main_product.white_border_share(pixels) > 0.8
    assert main_product.main_product(pixels, [SMALL], (60, 80)) is None


def test_a_product_on_a_texture_or_a_pale_colour_is_cut_out():
    rng = np.random.default_rng(0)
    texture = rng.integers(90, 200, size=(80, 60, 3), dtype=np.uint8)
    pale_pink = np.broadcast_to(np.asarray((250, 215, 220), np.uint8), (80, 60, 3))  # bright, but not white
    dim_white = np.full((80, 60, 3), 200, np.uint8)
    for pixels in (texture, pale_pink, dim_white):
        assert main_product.white_border_share(pixels) == 0.0
        assert main_product.main_product(pixels, [SMALL], (60, 80)) == SMALL


def test_the_whole_photo_when_nothing_is_found_or_the_product_fills_it():
    scene = np.full((80, 60, 3), 100, np.uint8)
    assert main_product.main_product(scene, [], (60, 80)) is None
    assert main_product.main_product(scene, [Detection(0, 0, 50, 60, "top", 0.9), SMALL], (60, 80)) is None


def test_the_border_is_read_at_the_decoded_scale_of_a_large_photo():
    # The detections are in pixels of the full size; the border share does not depend on the scale.
    pixels = packshot(300, 400)
    assert main_product.white_border_share(pixels) == pytest.approx(main_product.white_border_share(packshot()), 0.05)
    assert main_product.white_border_share(np.full((3, 2, 3), 255, np.uint8)) == 1.0  # a tiny photo: all border


def test_a_cut_out_is_on_white_at_the_catalogue_aspect():
    image = Image.fromarray(np.full((400, 300, 3), 100, np.uint8))
    cut = main_product.cut_out(image, Detection(400, 200, 400, 100, "belt", 0.9), (1200, 1600))  # at 1/4 scale
    assert cut.width / cut.height == pytest.approx(main_product.CATALOGUE_ASPECT, abs=0.02)
    pixels = np.asarray(cut)
    assert (pixels[0, 0] == 255).all() and (pixels[cut.height // 2, cut.width // 2] == 100).all()
