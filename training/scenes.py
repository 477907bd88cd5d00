"""Scenes for the detector, synthesised from packshots (cut-paste, as Dwibedi et al. 2017 and Ghiasi et al. 2021).

A packshot's white background makes it a free cut-out: `cutouts()` keeps the product's mask (border-connected
near-white is background, then a morphological opening drops specks). `scene()` pastes 1 to 5 of them on a
background (procedural textures and gradients from training/shopper.py, or a crop of a real photograph), scattered
with overlap, laid out flat, or alone and small, at varied scale and rotation; later products occlude earlier
ones. Each product's box is the bounding box of what stays visible of its mask; a product that keeps less than
MIN_VISIBLE of itself is dropped from the ground truth. Then the phone's effects (`shopper.phone_effects`).

Everything is seeded. Training scenes come from training-split packshots and the TRAIN_PHOTOS backgrounds; the
composite test split (`test_scenes`, 600x800 JPEGs with 2 to 4 test-split products) uses the held-out TEST_PHOTOS
for its real-photograph backgrounds. scikit-image's sample photos are never used: the held-back evaluation
reserves them.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from fashionsearch import model_contract
from fashionsearch.model_contract import InputSpec
from training import data, shopper

#: Detector groups: name -> the dataset's subCategories it holds (order = heatmap channels). Chosen from the data:
#: every subCategory with more than 80 products that a shopper photographs on its own; the rest (free gifts,
#: umbrellas, gloves, ...) is left out of training and evaluation.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("top", ("Topwear",)),
    ("bottom", ("Bottomwear",)),
    ("dress", ("Dress", "Saree", "Apparel Set")),
    ("innerwear", ("Innerwear", "Loungewear and Nightwear")),
    ("footwear", ("Shoes", "Sandal", "Flip Flops")),
    ("bag", ("Bags",)),
    ("watch", ("Watches",)),
    ("eyewear", ("Eyewear",)),
    ("belt", ("Belts",)),
    ("wallet", ("Wallets",)),
    ("headwear", ("Headwear",)),
    ("jewellery", ("Jewellery", "Cufflinks")),
    ("neckwear", ("Ties", "Scarves", "Stoles", "Mufflers")),
    ("socks", ("Socks",)),
    ("beauty", ("Fragrance", "Lips", "Makeup", "Nails", "Skin Care", "Skin", "Eyes")),
)
GROUP_NAMES = tuple(name for name, _ in GROUPS)
MIN_VISIBLE = 0.4  # of a product's own mask; less visible than this and it is not in the ground truth
MIN_BOX = 6  # pixels: a visible sliver narrower than this is not in the ground truth either
MAX_PRODUCT_AREA = 0.95  # a packshot whose mask covers more than this has no white background to cut it out by

_SITE = Path(shopper.__file__).resolve().parents[1]  # only to describe the paths below in the report
#: Real photographs shipped inside installed wheels (licences in reports/detector/README.md).
TRAIN_PHOTOS = ("sklearn:china.jpg", "matplotlib:grace_hopper.jpg")
TEST_PHOTOS = ("sklearn:flower.jpg",)  # held out from training, for the composite test split only


def group_index(sub_categories: np.ndarray) -> np.ndarray:
    """int (N,): each product's group, -1 for a subCategory in no group."""
    lookup = {sub: g for g, (_, subs) in enumerate(GROUPS) for sub in subs}
    return np.asarray([lookup.get(str(s), -1) for s in sub_categories], dtype=np.int64)


def groups_spec() -> list[dict[str, object]]:
    """The `groups` list of model.json's detection object."""
    return [{"name": name, "sub_categories": list(subs)} for name, subs in GROUPS]


# --------------------------------------------------------------------------------------------------------------
# Cut-outs


def _shift_all(mask: np.ndarray, op: str) -> np.ndarray:
    """3x3 binary erosion ('and') or dilation ('or') of (N, H, W) masks, edges padded with their own values."""
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = mask.shape[1:]
    out = mask.copy()
    for i in range(3):
        for j in range(3):
            window = padded[:, i : i + h, j : j + w]
            out = (out & window) if op == "and" else (out | window)
    return out


def product_masks(images: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """bool (N, H, W): the product in each uint8 packshot (not the border-connected white), opened 3x3."""
    out = []
    for start in range(0, len(images), chunk):
        background = shopper.background_mask(images[start : start + chunk], connected=True) > 0.5
        out.append(_shift_all(_shift_all(~background, "and"), "or"))
    return np.concatenate(out) if out else np.zeros(images.shape[:3], dtype=bool)


@dataclass(frozen=True)
class Products:
    """Cut-out products to paste: packshots, their masks, groups and ids (only usable ones)."""

    images: np.ndarray  # uint8 (N, H, W, 3)
    masks: np.ndarray  # bool (N, H, W)
    groups: np.ndarray  # int (N,)
    ids: np.ndarray  # int (N,)

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def members(self) -> Mapping[int, np.ndarray]:
        """group -> the indices of its products, worked out once per pool (drawing a scene's products needs it)."""
        return {g: np.flatnonzero(self.groups == g) for g in range(len(GROUPS))}


def products(dataset: data.Dataset) -> Products:
    """The dataset's products that belong to a group and have a white background to cut them out by."""
    groups = group_index(dataset.labels["subCategory"])
    keep = np.flatnonzero(groups >= 0)
    masks = product_masks(dataset.images[keep])
    area = masks.mean(axis=(1, 2))
    usable = (area > 0.03) & (area < MAX_PRODUCT_AREA)
    keep, masks = keep[usable], masks[usable]
    return Products(dataset.images[keep], masks, groups[keep], dataset.ids[keep])


# --------------------------------------------------------------------------------------------------------------
# Backgrounds


def photo_path(name: str) -> Path:
    """'sklearn:china.jpg' -> the file inside the installed package."""
    package, _, filename = name.partition(":")
    folders = {"sklearn": ("sklearn.datasets", "images"), "matplotlib": ("matplotlib", "mpl-data/sample_data")}
    if package not in folders:
        raise ValueError(f"unknown photo source {name!r}")
    module, folder = folders[package]
    spec = importlib.util.find_spec(module)  # found, not imported: scikit-learn is only a carrier of the photos
    if spec is None or spec.origin is None:
        raise data.DataError(f"{name} needs the {package} package (requirements/training.in)")
    return Path(spec.origin).parent / folder / filename


@cache
def load_photos(names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(Image.open(photo_path(n)).convert("RGB")) for n in names)


def photo_background(rng: np.random.Generator, h: int, w: int, photos: Sequence[np.ndarray]) -> np.ndarray:
    """A random crop of a random photograph (30% to all of it), mirrored at random, at (h, w), float32."""
    return shopper.photo_patch(rng, h, w, photos, zoom=(0.3, 1.0))


def background(
    rng: np.random.Generator, h: int, w: int, photos: Sequence[np.ndarray], donors: np.ndarray, photo_share: float
) -> np.ndarray:
    if photos and rng.random() < photo_share:
        return photo_background(rng, h, w, photos)
    # No "clutter": its cut-up packshots would be products without boxes.
    kind = str(rng.choice(shopper.BACKGROUND_KINDS, p=(0.2, 0.25, 0.35, 0.2, 0.0)))
    return shopper.texture(rng, h, w, kind, donors)


# --------------------------------------------------------------------------------------------------------------
# Scenes


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # uint8 (H, W, 3)
    boxes: np.ndarray  # float32 (n, 4): left, top, right, bottom in pixels
    groups: np.ndarray  # int (n,)
    ids: np.ndarray  # int (n,): the products' dataset ids


def _placements(rng: np.random.Generator, n: int, h: int, w: int, layout: str) -> list[tuple[float, float, float]]:
    """(centre x, centre y, size) per product, size = the product's long side in pixels."""
    short = min(h, w)
    if layout == "flatlay":  # a grid of cells, one product per cell, jittered
        cols = int(np.ceil(np.sqrt(n * w / h)))
        rows = int(np.ceil(n / cols))
        cells = rng.permutation(rows * cols)[:n]
        ch, cw = h / rows, w / cols
        return [
            (
                (c % cols + 0.5 + rng.uniform(-0.15, 0.15)) * cw,
                (c // cols + 0.5 + rng.uniform(-0.15, 0.15)) * ch,
                max(ch, cw) * rng.uniform(0.7, 1.05),
            )
            for c in cells
        ]
    if layout == "small":  # far away: small in the frame, anywhere
        return [(rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h, short * rng.uniform(0.1, 0.3)) for _ in range(n)]
    # scattered: any size, overlaps allowed
    return [
        (
            rng.uniform(0.15, 0.85) * w,
            rng.uniform(0.15, 0.85) * h,
            short * np.exp(rng.uniform(np.log(0.2), np.log(0.9))),
        )
        for _ in range(n)
    ]


def _transform(
    pixels: np.ndarray, mask: np.ndarray, size: float, angle: float, mirror: bool
) -> tuple[Image.Image, Image.Image]:
    """The product trimmed to its mask, scaled so its long side is `size`, rotated; (RGB, alpha L) images."""
    ys, xs = np.nonzero(mask)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    pixels, mask = pixels[top:bottom, left:right], mask[top:bottom, left:right]
    if mirror:
        pixels, mask = pixels[:, ::-1], mask[:, ::-1]
    ratio = size / max(pixels.shape[:2])
    new = (max(2, round(pixels.shape[1] * ratio)), max(2, round(pixels.shape[0] * ratio)))
    rgb = Image.fromarray(np.ascontiguousarray(pixels)).resize(new, Image.Resampling.BICUBIC)
    alpha = Image.fromarray(np.ascontiguousarray(mask).astype(np.uint8) * 255).resize(new, Image.Resampling.BILINEAR)
    if angle:
        rgb = rgb.rotate(angle, Image.Resampling.BILINEAR, expand=True)
        alpha = alpha.rotate(angle, Image.Resampling.BILINEAR, expand=True)
    return rgb, alpha


def compose(
    rng: np.random.Generator,
    h: int,
    w: int,
    pool: Products,
    chosen: Sequence[int],
    canvas: np.ndarray,
    layout: str,
    max_angle: float,
) -> Scene:
    """Paste the products `chosen` (indices into `pool`) on `canvas` (float32 (h, w, 3)) in this order."""
    owner = np.full((h, w), -1, dtype=np.int32)
    full_area = []
    for k, (index, (cx, cy, size)) in enumerate(zip(chosen, _placements(rng, len(chosen), h, w, layout), strict=True)):
        angle = rng.uniform(-max_angle, max_angle) if rng.random() < 0.6 else 0.0
        rgb, alpha_img = _transform(pool.images[index], pool.masks[index], size, angle, bool(rng.random() < 0.5))
        pw, ph = rgb.size
        left, top = round(cx - pw / 2), round(cy - ph / 2)
        # The part of the product inside the canvas.
        x0, y0, x1, y1 = max(0, left), max(0, top), min(w, left + pw), min(h, top + ph)
        alpha = np.asarray(alpha_img, dtype=np.float32) / 255.0
        full_area.append(float((alpha > 0.5).sum()))
        if x1 <= x0 or y1 <= y0:
            continue
        a = alpha[y0 - top : y1 - top, x0 - left : x1 - left, None]
        src = np.asarray(rgb, dtype=np.float32)[y0 - top : y1 - top, x0 - left : x1 - left]
        canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * (1 - a) + src * a
        owner[y0:y1, x0:x1][a[..., 0] > 0.5] = k
    boxes, groups, ids = [], [], []
    for k, index in enumerate(chosen):
        ys, xs = np.nonzero(owner == k)
        if len(ys) < MIN_VISIBLE * full_area[k] or len(ys) == 0:
            continue
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        if box[2] - box[0] < MIN_BOX or box[3] - box[1] < MIN_BOX:
            continue
        boxes.append(box)
        groups.append(pool.groups[index])
        ids.append(pool.ids[index])
    image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    return Scene(
        image,
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(groups, dtype=np.int64),
        np.asarray(ids, dtype=np.int64),
    )


def _choose(rng: np.random.Generator, pool: Products, n: int, group_weights: np.ndarray) -> list[int]:
    """n products: a group drawn by `group_weights`, then a product of that group."""
    by_group = pool.members
    out = []
    for g in rng.choice(len(GROUPS), size=n, p=group_weights):
        members = by_group[int(g)]
        out.append(int(members[rng.integers(0, len(members))]))
    return out


def group_weights(pool: Products, power: float = 0.5) -> np.ndarray:
    """Draw groups in proportion to count**power: the 14,000 tops do not crowd out the 260 caps."""
    counts = np.bincount(pool.groups, minlength=len(GROUPS)).astype(np.float64)
    weights = np.where(counts > 0, counts**power, 0.0)
    return weights / weights.sum()


def training_scene(
    rng: np.random.Generator, pool: Products, h: int, w: int, photos: Sequence[np.ndarray], weights: np.ndarray
) -> Scene:
    """One random training scene of (h, w): 1 to 5 products, phone effects applied."""
    layout = str(rng.choice(("scatter", "flatlay", "small"), p=(0.45, 0.35, 0.2)))
    n = int(rng.integers(1, 6))
    chosen = _choose(rng, pool, n, weights)
    donors = pool.images[rng.integers(0, len(pool), size=4)]
    canvas = background(rng, h, w, photos, donors, photo_share=0.4)
    scene = compose(rng, h, w, pool, chosen, canvas, layout, max_angle=35.0)
    image = shopper.phone_effects(scene.image, rng)
    return Scene(image, scene.boxes, scene.groups, scene.ids)


def training_scenes(pool: Products, count: int, input_spec: InputSpec, seed: int) -> list[Scene]:
    """`count` seeded scenes that fill the model's letterboxed input: mostly portrait like a phone photo (3:4 and
    4:5), some landscape (4:3), each drawn at the size it takes inside the input (the rest is the letterbox pad)."""
    rng = np.random.default_rng(seed)
    photos = load_photos(TRAIN_PHOTOS)
    weights = group_weights(pool)
    out = []
    for _ in range(count):
        aspect = float(rng.choice((0.75, 0.8, 4 / 3), p=(0.45, 0.4, 0.15)))  # width / height
        ratio = min(input_spec.width / aspect, input_spec.height)
        h, w = round(ratio), round(ratio * aspect)
        scene = training_scene(rng, pool, h, w, photos, weights)
        out.append(letterbox(scene, input_spec))
    return out


def letterbox(scene: Scene, spec: InputSpec) -> Scene:
    """The scene as the model sees it (the contract's "pad" resize) with its boxes moved to match."""
    h, w = scene.image.shape[:2]
    box = model_contract.letterbox(w, h, spec)
    scale = np.asarray([box.width / w, box.height / h, box.width / w, box.height / h], dtype=np.float32)
    boxes = scene.boxes * scale + np.asarray([box.left, box.top, box.left, box.top], dtype=np.float32)
    return Scene(model_contract.resize_to_input(scene.image, spec), boxes.astype(np.float32), scene.groups, scene.ids)


# --------------------------------------------------------------------------------------------------------------
# The composite test split


TEST_WIDTH, TEST_HEIGHT = 600, 800
TEST_SEED = 20261206


def composite_test_split(
    dataset: data.Dataset, split: Mapping[int, str], count: int, seed: int = TEST_SEED
) -> list[Scene]:
    """The composite test split from the test-split products of `dataset` (what the reports and the gateway-side
    evaluation measure on): a list of Scene with the photo, boxes (left, top, right, bottom), groups and ids."""
    return test_scenes(split_products(dataset, split, "test"), count, seed)


def test_scenes(pool: Products, count: int, seed: int = TEST_SEED, quality: int = 90) -> list[Scene]:
    """The seeded composite test split: `count` 600x800 (W x H) JPEG-decoded photos of 2 to 4 products from
    `pool` (give it test-split products), laid flat or scattered at 25% to 55% of the short side, on a texture or
    a patch of a held-out photograph; no phone effects (evaluation adds those as shifts). Same seed, same split."""
    rng = np.random.default_rng(seed)
    photos = load_photos(TEST_PHOTOS)
    weights = group_weights(pool)
    out = []
    for _ in range(count):
        n = int(rng.integers(2, 5))
        chosen = _choose(rng, pool, n, weights)
        donors = pool.images[rng.integers(0, len(pool), size=4)]
        canvas = background(rng, TEST_HEIGHT, TEST_WIDTH, photos, donors, photo_share=0.5)
        layout = "flatlay" if rng.random() < 0.6 else "scatter"
        scene = compose(rng, TEST_HEIGHT, TEST_WIDTH, pool, chosen, canvas, layout, max_angle=15.0)
        buffer = io.BytesIO()
        Image.fromarray(scene.image).save(buffer, format="JPEG", quality=quality)
        image = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        out.append(Scene(image, scene.boxes, scene.groups, scene.ids))
    return out


def split_products(dataset: data.Dataset, split: Mapping[int, str], name: str) -> Products:
    """The cut-out products of one split ("train" for training scenes, "test" for the composite test split)."""
    return products(dataset.split(split, name))
