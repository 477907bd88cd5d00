"""What crop=auto reads: a packshot whole, a scene's main product cut out (fashionsearch.main_product)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fashionsearch import main_product
from fashionsearch.detection import Detection

#: packshot()'s product: 42% of the photo, spanning 84% of its height.
PRODUCT = Detection(15, 13, 30, 67, "dress", 0.9)
SMALL = Detection(20, 30, 15, 15, "watch", 0.9)  # a quarter of the width: far away


def packshot(width: int = 60, height: int = 80) -> np.ndarray:
    """A product on the catalogue's white, touching the bottom edge (as a dress or a model's photo may)."""
    pixels = np.full((height, width, 3), 250, np.uint8)
    pixels[height // 6 :, width // 4 : 3 * width // 4] = (30, 40, 120)
    return pixels


def test_a_packshot_is_read_whole_though_its_box_covers_under_half_of_it():
    pixels = packshot()
    assert main_product.white_border_share(pixels) > 0.8
    assert main_product.main_product(pixels, [PRODUCT], (60, 80)) is None


def test_the_decoded_image_is_read_as_its_pixels_are():
    # The gateway passes its decoded photo (services/gateway/crops.py), whose pixels are read only when needed.
    shot, wall = packshot(), packshot()
    wall[wall[..., 0] == 250] = (60, 120, 200)
    assert main_product.main_product(Image.fromarray(shot), [PRODUCT], (60, 80)) is None
    assert main_product.main_product(Image.fromarray(wall), [PRODUCT], (60, 80)) == PRODUCT


def test_a_packshot_under_dim_or_tinted_light_is_still_a_packshot():
    x = packshot().astype(np.float32)
    for gains in ((0.5, 0.5, 0.5), (1.12, 1.0, 0.88), (0.88, 1.0, 1.12)):  # a dim room, warm and cool light
        lit = np.clip(x * np.asarray(gains, np.float32), 0, 255).astype(np.uint8)
        assert main_product.main_product(lit, [PRODUCT], (60, 80)) is None, gains


def test_a_product_far_away_on_white_is_cut_out():
    # A white table photographed from afar: a white border, but the product does not fill the frame as in the
    # catalogue.
    pixels = np.full((80, 60, 3), 250, np.uint8)
    pixels[30:45, 20:35] = (30, 40, 120)
    assert main_product.white_border_share(pixels) == 1.0
    assert main_product.main_product(pixels, [SMALL], (60, 80)) == SMALL


def test_a_product_on_a_texture_or_a_coloured_wall_is_cut_out():
    rng = np.random.default_rng(0)
    texture = rng.integers(90, 200, size=(80, 60, 3), dtype=np.uint8)
    for colour in ((240, 190, 200), (60, 120, 200), (200, 170, 90)):  # pink, blue, ochre walls
        wall = packshot()
        wall[wall[..., 0] == 250] = colour
        assert main_product.white_border_share(wall) == 0.0, colour
        assert main_product.main_product(wall, [PRODUCT], (60, 80)) == PRODUCT
    assert main_product.white_border_share(texture) < 0.1
    assert main_product.main_product(texture, [PRODUCT], (60, 80)) == PRODUCT


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


def test_a_small_main_product_is_read_beside_the_whole_photo_when_another_product_scores_close_to_it():
    size = (60, 80)
    assert not main_product.read_beside_whole([SMALL], size)  # 5% of the photo: the cut-out alone
    close = Detection(0, 0, 10, 10, "bag", main_product.RIVAL_SCORE_SHARE * SMALL.score)
    faint = Detection(0, 0, 10, 10, "bag", 0.99 * main_product.RIVAL_SCORE_SHARE * SMALL.score)
    assert main_product.read_beside_whole([SMALL, close], size)
    assert not main_product.read_beside_whole([SMALL, faint], size)
    assert main_product.read_beside_whole([PRODUCT], size)  # 42% of the photo: beside it whatever else is found


def test_a_packshot_is_told_from_its_pixels_before_any_detector_runs():
    # What Search checks before it calls the detector: a white border and a product spanning 30% of the frame.
    shot = packshot()
    assert main_product.product_span(shot) == pytest.approx(67 / 80, abs=0.03)
    assert main_product.is_packshot(shot) and main_product.is_packshot(Image.fromarray(shot))
    far = np.full((80, 60, 3), 250, np.uint8)
    far[30:45, 20:35] = (30, 40, 120)  # a product far away on a white table
    assert main_product.product_span(far) == pytest.approx(15 / 60, abs=0.03)  # a quarter of the width
    assert not main_product.is_packshot(far)
    wall = packshot()
    wall[wall[..., 0] == 250] = (60, 120, 200)
    assert not main_product.is_packshot(wall)  # no white border
    blank = np.full((80, 60, 3), 250, np.uint8)
    assert main_product.product_span(blank) == 0.0 and not main_product.is_packshot(blank)


def test_a_speck_on_the_white_does_not_stretch_the_product():
    shot = np.full((80, 60, 3), 250, np.uint8)
    shot[30:45, 20:35] = (30, 40, 120)
    shot[2, 2] = shot[77, 57] = (0, 0, 0)  # two dark pixels in the corners, under EXTENT_MIN_SHARE of a row
    assert main_product.product_span(shot) == pytest.approx(15 / 60, abs=0.03)
