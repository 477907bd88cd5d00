"""What of a photo the classifier and embedder read when a search crops automatically (crop=auto).

A packshot (the catalogue's kind of photo: the product on white, framed around it, also under a phone's dim or
tinted light) is read whole: the models were trained on exactly that, and cutting it out again only changes its
framing (on catalogue packshots that cost 2.5 points of articleType accuracy). Most packshots are told from their
pixels alone (`is_packshot`: a white border, and what is not white spans enough of the frame), before the detector is
asked, so searching one costs no detector call; the rest by the detector's best box (`main_product`). Anything else is
a scene: the detector's best product is cut out with a margin and put on white at the catalogue's 3:4, never
stretched, so the models see a packshot again.

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
#: A packshot's white is found as an automatic white balance finds it ("white patch"): each channel's brightest
#: level in the photo (this percentile, so a few specular pixels do not count). A border pixel is the background's
#: when every channel is within PAPER_LEVEL of that white, and the pixel is near-grey as it was taken (its channels
#: within PAPER_CHROMA of its brightest, plus PAPER_GREY_SLACK): a packshot under dim or tinted light still counts,
#: a product on a coloured wall does not.
WHITE_PERCENTILE = 99.0
PAPER_LEVEL = 0.9
PAPER_CHROMA = 0.1
PAPER_GREY_SLACK = 12.0
#: A photo whose border is the photo's own white for at least this share of its pixels, and whose best box spans
#: at least PACKSHOT_MIN_SPAN of its width or height (as the catalogue frames a product; one far away on a white
#: table does not), is a packshot, read whole. Chosen on validation-split photos with detector 1
#: (bench/packshot_rule.py, bench/README.md): crop=auto then reads 99.1% of the white-background packshots whole
#: (99.6% under dim, warm or cool light, 90.8% through random phone effects; 40.5% without the rule), and the rule
#: adds 0.3 points to the single-product scenes on textures or photographs read whole (those where the detector
#: finds nothing or a box covering half the photo), 1.7 to those on a plain wall of a random colour.
PACKSHOT_WHITE_BORDER = 0.6
PACKSHOT_MIN_SPAN = 0.3
#: product_span: a row or column of the photo counts as the product's when at least this share of it is not white.
EXTENT_MIN_SHARE = 0.02
#: A photo whose best box covers at least this share of it is framed around the product already: read whole.
WHOLE_PHOTO_SHARE = 0.5
#: A main product whose box covers at least this share of the photo (and less than WHOLE_PHOTO_SHARE) is read twice,
#: cut out and in the whole photo, and the two readings averaged (services/gateway/readings.py): a box that holds
#: only part of the product, or another product, is then corrected by the photo around it. A smaller box is read
#: cut out alone: the whole photo, shrunk to the models' input, shows such a product in a few pixels and reads as
#: its background. Chosen on validation photos (bench/README.md, "Outfit search and crop=auto"): with the two readings
#: averaged for every box, the single products small in 600x800 scenes lost 4 points of articleType; from 0.15 up
#: they lost nothing, and the suite's packshots on backgrounds kept most of the gain (masterCategory +0.5 on
#: average, +1.0 on the worst shift).
BESIDE_WHOLE_SHARE = 0.15
#: Another product scored at least this share of the main product's score makes the choice uncertain (other products
#: lying around it, or an object over it that reads as one): the main product cut out is then read beside the whole
#: photo whatever its size. Chosen on validation photos (bench/README.md, "Outfit search and crop=auto"): on the
#: suite's clutter the detector's best box was often another product, and masterCategory fell 4.0 points cut out
#: against 0.8 read whole; with this rule 1.3, while the bench's single products small in a scene (one box each, as a
#: rule) read as before.
RIVAL_SCORE_SHARE = 0.5
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


#: The photo's white and the product's span are read on a sample of about this many pixels on the short side: the
#: shares they measure do not depend on the scale, and a decoded photo is big.
SAMPLE_SIDE = 128


def _sampled(pixels: np.ndarray) -> np.ndarray:
    """Every step-th pixel each way, for a sample of about SAMPLE_SIDE pixels on the short side."""
    step = max(1, min(pixels.shape[:2]) // SAMPLE_SIDE)
    return pixels[::step, ::step]


def _photo_white(pixels: np.ndarray) -> np.ndarray:
    """The photo's own white, each channel's WHITE_PERCENTILE level."""
    white: np.ndarray = np.percentile(_sampled(pixels).reshape(-1, 3), WHITE_PERCENTILE, axis=0)
    return white.astype(np.float32)


def _paper(pixels: np.ndarray, white: np.ndarray) -> np.ndarray:
    """bool (...): where uint8 RGB pixels (..., 3) are the photo's `white` background (PAPER_LEVEL, PAPER_CHROMA)."""
    x = pixels.astype(np.float32)
    high, low = x.max(axis=-1), x.min(axis=-1)
    grey = high - low <= PAPER_CHROMA * high + PAPER_GREY_SLACK
    paper: np.ndarray = grey & (x >= PAPER_LEVEL * np.maximum(white, 32.0)).all(axis=-1)  # 32: black has no white
    return paper


def white_border_share(pixels: np.ndarray, white: np.ndarray | None = None) -> float:
    """The share of the photo's border (BORDER of its short side, all around) that is the photo's own white (`white`,
    found here when not given): the catalogue's white background, however the light made it look (see PAPER_LEVEL)."""
    height, width = pixels.shape[:2]
    k = max(1, round(BORDER * min(height, width)))
    if height <= 2 * k or width <= 2 * k:
        border = pixels.reshape(-1, 3)
    else:
        strips = (pixels[:k], pixels[-k:], pixels[k:-k, :k], pixels[k:-k, -k:])
        border = np.concatenate([strip.reshape(-1, 3) for strip in strips])
    return float(_paper(border, _photo_white(pixels) if white is None else white).mean())


def product_span(pixels: np.ndarray, white: np.ndarray | None = None) -> float:
    """How far what is not the photo's own white (`white`, found here when not given) reaches: its bounding box's
    larger share of the photo's width or height (rows and columns with fewer than EXTENT_MIN_SHARE of such pixels do
    not count: JPEG noise, a speck)."""
    product = ~_paper(_sampled(pixels), _photo_white(pixels) if white is None else white)
    rows = np.flatnonzero(product.mean(axis=1) >= EXTENT_MIN_SHARE)
    columns = np.flatnonzero(product.mean(axis=0) >= EXTENT_MIN_SHARE)
    if not len(rows) or not len(columns):
        return 0.0
    height, width = product.shape
    return float(max((rows[-1] - rows[0] + 1) / height, (columns[-1] - columns[0] + 1) / width))


def is_packshot(pixels: np.ndarray | Image.Image, packshot_border: float = PACKSHOT_WHITE_BORDER) -> bool:
    """A packshot told from its pixels alone, before any detector runs: its border is its own white
    (`packshot_border`) and the product on it spans PACKSHOT_MIN_SPAN of its width or height."""
    array = np.asarray(pixels)
    white = _photo_white(array)
    return white_border_share(array, white) >= packshot_border and product_span(array, white) >= PACKSHOT_MIN_SPAN


def main_product(
    pixels: np.ndarray | Image.Image,
    detections: Sequence[Detection],
    size: tuple[int, int],
    packshot_border: float = PACKSHOT_WHITE_BORDER,
    packshot_span: float = PACKSHOT_MIN_SPAN,
) -> Detection | None:
    """The product to cut out of the photo (uint8 RGB pixels, or the decoded RGB image, whose pixels are read only
    when the packshot rule needs them; maybe at a reduced scale; the detections in pixels of its full `size`, best
    first), or None to read the whole photo: no product found, a best box that covers WHOLE_PHOTO_SHARE of the
    photo, or a packshot (`packshot_border`, `packshot_span`: other thresholds, to measure them)."""
    if not detections:
        return None
    best, (width, height) = detections[0], size
    if best.width * best.height >= WHOLE_PHOTO_SHARE * width * height:
        return None
    spans = max(best.width / width, best.height / height) >= packshot_span
    if spans and white_border_share(np.asarray(pixels)) >= packshot_border:
        return None
    return best


def read_beside_whole(detections: Sequence[Detection], size: tuple[int, int]) -> bool:
    """Whether the main product (`detections[0]`, the best, as `main_product` chose it) cut out of a photo of `size` is
    read beside the whole photo: its box covers BESIDE_WHOLE_SHARE of the photo, or another detection scores
    RIVAL_SCORE_SHARE of its score."""
    best = detections[0]
    if best.width * best.height >= BESIDE_WHOLE_SHARE * size[0] * size[1]:
        return True
    return any(other.score >= RIVAL_SCORE_SHARE * best.score for other in detections[1:])


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
