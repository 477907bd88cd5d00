"""What of a photo the classifier and embedder read when a search crops automatically (crop=auto).

A packshot (the catalogue's kind of photo: the product on white, framed around it) is read whole: the models were
trained on exactly that, and cutting it out again only changes its framing (on catalogue packshots that cost 2.5
points of articleType accuracy). Anything else is a scene: the detector's best product is cut out with a margin
and put on white at the catalogue's 3:4, never stretched, so the models see a packshot again.

One home for the rule, used by the gateway (services/gateway/crops.py) and by the robustness suite
(training/robustness.py), so the suite measures the path a search takes. Plain NumPy and Pillow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from fashionsearch.detection import Detection, crop_box

#: A pixel of the catalogue's white background: every channel at least WHITE_MIN, and the channels within
#: WHITE_SPREAD of each other (near-grey, not a pale colour). Training cuts packshots out by it too.
WHITE_MIN = 228
WHITE_SPREAD = 24
#: The border a packshot is recognised by: this share of the photo's short side, all around.
BORDER = 0.03
#: A photo whose border is near-white for at least this share of its pixels is a packshot and is read whole.
#: Chosen on validation-split photos (bench/packshot_rule.py, bench/README.md): 99.5% of the packshots that have
#: a white background reach it (97.6% of all catalogue photos), 0.0% of single products anywhere on a texture or
#: a photograph and 0.7% of those small in the frame (0.7: 98.9% of the packshots, the same scenes; 0.8: 97.9%,
#: 0.3% of the small ones).
PACKSHOT_WHITE_BORDER = 0.6
#: A photo whose best box covers at least this share of it is framed around the product already: read whole.
WHOLE_PHOTO_SHARE = 0.5
#: Width / height of the catalogue's photos (60x80 and their larger originals).
CATALOGUE_ASPECT = 3 / 4
#: A cut-out smaller than this on its short side is enlarged to it (the services refuse images under 8 pixels).
MIN_SIDE = 64
WHITE = (255, 255, 255)
#: A cut-out goes to the model services as a JPEG of this quality.
JPEG_QUALITY = 95


def near_white(pixels: np.ndarray) -> np.ndarray:
    """bool (..., H, W): where uint8 RGB pixels (..., H, W, 3) show the catalogue's white background."""
    x = pixels.astype(np.int16)
    low, high = x.min(axis=-1), x.max(axis=-1)
    white: np.ndarray = (low >= WHITE_MIN) & (high - low <= WHITE_SPREAD)
    return white


def white_border_share(pixels: np.ndarray) -> float:
    """The share of the photo's border (BORDER of its short side, all around) that is near-white."""
    height, width = pixels.shape[:2]
    k = max(1, round(BORDER * min(height, width)))
    if height <= 2 * k or width <= 2 * k:
        return float(near_white(pixels).mean())
    strips = (pixels[:k], pixels[-k:], pixels[k:-k, :k], pixels[k:-k, -k:])
    return float(sum(near_white(s).sum() for s in strips) / sum(s.shape[0] * s.shape[1] for s in strips))


def is_packshot(pixels: np.ndarray) -> bool:
    return white_border_share(pixels) >= PACKSHOT_WHITE_BORDER


def main_product(pixels: np.ndarray, detections: Sequence[Detection], size: tuple[int, int]) -> Detection | None:
    """The product to cut out of the photo (uint8 RGB pixels, maybe at a reduced scale; the detections in pixels
    of its full `size`, best first), or None to read the whole photo: a packshot, no product found, or a best box
    that covers WHOLE_PHOTO_SHARE of the photo."""
    if not detections or is_packshot(pixels):
        return None
    best, (width, height) = detections[0], size
    if best.width * best.height >= WHOLE_PHOTO_SHARE * width * height:
        return None
    return best


def cut_out(image: Image.Image, detection: Detection, size: tuple[int, int]) -> Image.Image:
    """The detection (in pixels of the photo's full `size`) cut out of `image` (the photo, maybe reduced), with a
    margin (crop_box), on white at the catalogue's aspect, enlarged when tiny."""
    scaled = detection.scaled(image.width / size[0], image.height / size[1])
    return on_white(image.crop(crop_box(scaled, image.width, image.height)))


def on_white(crop: Image.Image) -> Image.Image:
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
