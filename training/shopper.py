"""How a shopper's photo differs from a catalogue packshot, as image operations on uint8 RGB arrays.

Used twice, with different randomness: `augment_views` draws random training views (every family, random
strengths, several at once), and `training.robustness` applies one family at a fixed severity to measure a model.
The families: the white background replaced (solid colours, gradients, textures, stripes, clutter cut from
other photos), light (brightness, contrast, gamma), white balance and colour temperature, sensor noise, blur,
JPEG, crops, rotation, scale and aspect, and partial occlusion.

Colour labels stay honest: the white-balance and temperature shifts are mild (at most about 12% per channel, what
an auto-white-balanced phone photo keeps), so a red shirt stays red; nothing changes hue.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from fashionsearch.detection import Detection
from fashionsearch.main_product import cut_out
from fashionsearch.main_product import near_white as catalogue_white

# --------------------------------------------------------------------------------------------------------------
# The background


def background_mask(images: np.ndarray, connected: bool = True) -> np.ndarray:
    """float32 (N, H, W) alpha, 1 where the photo shows the packshot's white background.

    connected=True keeps only near-white pixels reachable from the border (a white shirt inside a margin stays
    the product); False takes every near-white pixel, as a naive background replacement does. The edge is
    softened by a 3x3 box so a replaced background does not leave a white halo."""
    near_white = catalogue_white(images)  # the catalogue's white, as the gateway recognises a packshot by
    if connected:
        filled = np.zeros_like(near_white)
        filled[:, 0, :], filled[:, -1, :], filled[:, :, 0], filled[:, :, -1] = (
            near_white[:, 0, :],
            near_white[:, -1, :],
            near_white[:, :, 0],
            near_white[:, :, -1],
        )
        # Flood fill from the border, all images at once: grow into near-white neighbours until nothing changes.
        for _ in range(sum(images.shape[1:3])):
            grown = filled.copy()
            grown[:, 1:] |= filled[:, :-1]
            grown[:, :-1] |= filled[:, 1:]
            grown[:, :, 1:] |= filled[:, :, :-1]
            grown[:, :, :-1] |= filled[:, :, 1:]
            grown &= near_white
            if np.array_equal(grown, filled):
                break
            filled = grown
        near_white = filled
    alpha = near_white.astype(np.float32)
    padded = np.pad(alpha, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = alpha.shape[1:]
    total = np.zeros_like(alpha)
    for i in range(3):
        for j in range(3):
            total += padded[:, i : i + h, j : j + w]
    return total / 9.0


def composite(images: np.ndarray, backgrounds: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return np.clip(images * (1.0 - a) + backgrounds * a + 0.5, 0, 255).astype(np.uint8)


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """(h, w) values in [0, 1]: random values on a coarse grid, upsampled bicubically (a blotchy texture)."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    grid = Image.fromarray((rng.random((gh, gw)) * 255).astype(np.uint8))
    return np.asarray(grid.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


def random_colour(rng: np.random.Generator, lo: int = 40, hi: int = 235) -> np.ndarray:
    return rng.integers(lo, hi, size=3).astype(np.float32)


def texture(rng: np.random.Generator, h: int, w: int, kind: str, donors: np.ndarray | None = None) -> np.ndarray:
    """A float32 (h, w, 3) background of the given kind."""
    if kind == "solid":
        return np.broadcast_to(random_colour(rng), (h, w, 3)).copy()
    if kind == "gradient":
        a, b = random_colour(rng), random_colour(rng)
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xx * np.cos(angle) / w + yy * np.sin(angle) / h
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        return a * (1 - t[..., None]) + b * t[..., None]
    if kind == "blotches":  # cloth, carpet, a bedspread
        base, other = random_colour(rng), random_colour(rng)
        n = smooth_noise(rng, h, w, cell=rng.uniform(3, 12))
        fine = rng.normal(0, rng.uniform(3, 14), size=(h, w, 1))
        return base * (1 - n[..., None]) + other * n[..., None] + fine
    if kind == "stripes":  # a striped sheet, floorboards, a checked tablecloth
        a, b = random_colour(rng), random_colour(rng)
        period = rng.uniform(3, 14)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        s = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0
        if rng.random() < 0.3:
            s ^= np.sin((-xx * np.sin(angle) + yy * np.cos(angle)) * 2 * np.pi / period) > 0
        return np.where(s[..., None], a, b) + rng.normal(0, 4, size=(h, w, 1))
    if kind == "clutter" and donors is not None and len(donors):  # other things lying around
        tiles = donors[rng.integers(0, len(donors), size=4)].astype(np.float32)
        mosaic = np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)
        img = Image.fromarray(mosaic.astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
        tint = random_colour(rng, 60, 200)
        mix = rng.uniform(0.2, 0.6)
        return np.asarray(img, dtype=np.float32) * (1 - mix) + tint * mix
    return texture(rng, h, w, "blotches")


BACKGROUND_KINDS = ("solid", "gradient", "blotches", "stripes", "clutter")


def photo_patch(
    rng: np.random.Generator, h: int, w: int, photos: Sequence[np.ndarray], zoom: tuple[float, float]
) -> np.ndarray:
    """A random crop of a random photograph at (h, w), float32, mirrored at random; `zoom` bounds its size as a
    share of the largest (h, w)-shaped crop the photograph holds."""
    photo = photos[int(rng.integers(0, len(photos)))]
    ph, pw = photo.shape[:2]
    scale = rng.uniform(*zoom) * min(ph / h, pw / w)
    ch, cw = max(8, int(h * scale)), max(8, int(w * scale))
    top, left = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = Image.fromarray(photo[top : top + ch, left : left + cw]).resize((w, h), Image.Resampling.BILINEAR)
    out = np.asarray(crop, dtype=np.float32)
    return out[:, ::-1] if rng.random() < 0.5 else out


# --------------------------------------------------------------------------------------------------------------
# One photo at a time (PIL)


def affine(
    img: np.ndarray,
    angle: float = 0.0,
    scale: float = 1.0,
    dx: float = 0.0,
    dy: float = 0.0,
    aspect: float = 1.0,
    fill: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Rotate by `angle` degrees, scale (around the centre), stretch width by `aspect`, shift by (dx, dy) of the
    size; uncovered corners take `fill` (the packshot's white, replaced later with the background if any)."""
    h, w = img.shape[:2]
    a = np.deg2rad(angle)
    sx, sy = scale * aspect, scale
    # Output (x, y) samples input A (x - c) + c - t with A the inverse of rotation * scale.
    cos, sin = np.cos(a), np.sin(a)
    inv = np.array([[cos / sx, sin / sx], [-sin / sy, cos / sy]])
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    tx, ty = dx * w, dy * h
    c0 = cx - inv[0, 0] * (cx + tx) - inv[0, 1] * (cy + ty)
    c1 = cy - inv[1, 0] * (cx + tx) - inv[1, 1] * (cy + ty)
    coeffs = (inv[0, 0], inv[0, 1], c0, inv[1, 0], inv[1, 1], c1)
    out = Image.fromarray(img).transform(
        (w, h), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=fill
    )
    return np.asarray(out)


def crop(img: np.ndarray, fraction: float, cx: float = 0.5, cy: float = 0.5) -> np.ndarray:
    """Keep `fraction` of the width and height around (cx, cy) (fractions of the size), resized back."""
    h, w = img.shape[:2]
    ch, cw = max(2, round(h * fraction)), max(2, round(w * fraction))
    top = int(np.clip(round(cy * h - ch / 2), 0, h - ch))
    left = int(np.clip(round(cx * w - cw / 2), 0, w - cw))
    return np.asarray(Image.fromarray(img[top : top + ch, left : left + cw]).resize((w, h), Image.Resampling.BILINEAR))


def light(
    img: np.ndarray,
    brightness: float = 1.0,
    contrast: float = 1.0,
    gamma: float = 1.0,
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Exposure, contrast around the photo's mean, gamma, and per-channel gains (white balance)."""
    x = img.astype(np.float32) / 255.0
    if gamma != 1.0:
        x = x**gamma
    if contrast != 1.0:
        x = (x - x.mean()) * contrast + x.mean()
    x = x * brightness * np.asarray(gains, dtype=np.float32)
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def temperature(shift: float) -> tuple[float, float, float]:
    """Channel gains for a colour cast: positive is warm (tungsten), negative cool (shade)."""
    return (1.0 + shift, 1.0, 1.0 - shift)


def noise(img: np.ndarray, sigma: float, rng: np.random.Generator, chroma: float = 0.3) -> np.ndarray:
    """Gaussian sensor noise of `sigma` (of 255): luminance noise plus a `chroma` share per channel."""
    h, w = img.shape[:2]
    n = rng.normal(0, sigma, size=(h, w, 1)) * (1 - chroma) + rng.normal(0, sigma, size=(h, w, 3)) * chroma
    return np.clip(img.astype(np.float32) + n + 0.5, 0, 255).astype(np.uint8)


def blur(img: np.ndarray, radius: float) -> np.ndarray:
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)))


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def occlude(img: np.ndarray, area: float, rng: np.random.Generator, patch: np.ndarray | None = None) -> np.ndarray:
    """Cover a random rectangle of `area` (fraction of the photo) with a colour or a piece of another photo: a
    hand, a hanger, something in front."""
    h, w = img.shape[:2]
    aspect = rng.uniform(0.5, 2.0)
    ph = int(np.clip(round(np.sqrt(area * h * w * aspect)), 2, h))
    pw = int(np.clip(round(area * h * w / ph), 2, w))
    top, left = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
    out = img.copy()
    if patch is not None:
        out[top : top + ph, left : left + pw] = np.asarray(
            Image.fromarray(patch).resize((pw, ph), Image.Resampling.BILINEAR)
        )
    else:
        out[top : top + ph, left : left + pw] = random_colour(rng, 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------------------------------------------
# Random training views


# Bumped whenever augment_views changes, so cached views of an older version are not reused (views on photographs
# are keyed by the photographs' names instead: without them a view is drawn as in version 2).
AUGMENT_VERSION = 2

#: With photographs given: their zoom (a cut-out shows a small part of the scene behind the product), and the
#: share of the views on a photograph framed as the gateway cuts a detected product out (issue 28).
PHOTO_ZOOM = (0.08, 0.6)
CUT_OUT_SHARE = 0.5
#: How far a detector's box may miss the product's own, per side, as a share of its size.
BOX_JITTER = 0.08


@dataclass(frozen=True)
class ViewMix:
    """How often, and how hard, augment_views shifts a view where a shopper's scene differs most from a packshot.
    The defaults drew the views of models 8 and 9 (and, with the same seed, draw the same views again)."""

    #: The smallest a product is scaled to (of its packshot size) when a view is zoomed.
    min_scale: float = 0.5
    #: The share of views with a rectangle in front of the product, and its area range (of the photo).
    occlusion_share: float = 0.25
    occlusion_area: tuple[float, float] = (0.05, 0.35)
    #: With photographs given: the share of replaced backgrounds that are a patch of one (a room, a street).
    photo_share: float = 0.35


#: The mix models 8 and 9 were trained on.
DEFAULT_MIX = ViewMix()
#: Harder scenes (`train --scene-views`): smaller products, more and larger occluders, more photographs: the
#: shifts issue 28 still misses (reports/robustness/crop-auto-rival-1500.md).
SCENE_MIX = ViewMix(min_scale=0.4, occlusion_share=0.4, occlusion_area=(0.05, 0.4), photo_share=0.5)


def augment_views(
    images: np.ndarray,
    rng: np.random.Generator,
    donors: np.ndarray | None = None,
    photos: Sequence[np.ndarray] = (),
    mix: ViewMix = DEFAULT_MIX,
) -> np.ndarray:
    """One random shopper-like view of each uint8 (N, H, W, 3) packshot. `donors` are other packshots, cut up for
    clutter backgrounds and occluders; `photos`, real photographs: with them, some backgrounds are patches of a
    photograph, and half of those views are framed as the gateway cuts out a product the detector found. `mix`
    says how often and how hard the scene shifts are."""
    n, h, w = images.shape[:3]
    out = np.empty_like(images)
    for k in range(n):
        img = images[k]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        if rng.random() < 0.6:
            img = affine(
                np.ascontiguousarray(img),
                angle=rng.uniform(-22, 22) if rng.random() < 0.7 else 0.0,
                scale=rng.uniform(mix.min_scale, 1.15),  # zoomed-out photos were the weakest in v6
                dx=rng.uniform(-0.08, 0.08),
                dy=rng.uniform(-0.08, 0.08),
                aspect=rng.uniform(0.88, 1.12),
            )
        if rng.random() < 0.3:
            img = crop(np.ascontiguousarray(img), rng.uniform(0.6, 0.95), rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6))
        out[k] = img
    # Backgrounds for about 60% of the views, masks computed for the whole batch at once.
    replace = np.asarray(rng.random(n) < 0.6)
    cut: dict[int, np.ndarray] = {}  # view -> its product mask, for the views framed as cut-outs
    if replace.any():
        idx = np.flatnonzero(replace)
        connected = rng.random() < 0.85
        alpha = background_mask(out[idx], connected=connected)
        kinds = rng.choice(BACKGROUND_KINDS, size=len(idx), p=(0.15, 0.15, 0.3, 0.15, 0.25))
        backgrounds = np.stack([texture(rng, h, w, kind, donors) for kind in kinds])
        if photos:
            for j in np.flatnonzero(rng.random(len(idx)) < mix.photo_share):
                backgrounds[j] = photo_patch(rng, h, w, photos, PHOTO_ZOOM)
                if rng.random() < CUT_OUT_SHARE:
                    cut[int(idx[j])] = alpha[j] < 0.5
        out[idx] = composite(out[idx].astype(np.float32), backgrounds, alpha)
    for k in range(n):
        img = out[k]
        if rng.random() < mix.occlusion_share:
            patch = donors[rng.integers(0, len(donors))] if donors is not None and rng.random() < 0.5 else None
            img = occlude(img, rng.uniform(*mix.occlusion_area), rng, patch)
        img = phone_effects(img, rng)
        out[k] = as_cut_out(img, cut[k], rng) if k in cut else img
    return out


def as_cut_out(img: np.ndarray, product: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The view as the gateway reads a detected product (fashionsearch.main_product.cut_out): the product's box,
    missed by up to BOX_JITTER a side as a detector's is, with the served margin, on white at the catalogue's
    aspect, back at the view's size. A view whose product is not visible stays as it is."""
    rows, cols = np.flatnonzero(product.any(axis=1)), np.flatnonzero(product.any(axis=0))
    if len(rows) < 4 or len(cols) < 4:
        return img
    h, w = img.shape[:2]
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    bh, bw = bottom - top, right - left
    top, bottom = (v + rng.uniform(-BOX_JITTER, BOX_JITTER) * bh for v in (top, bottom))
    left, right = (v + rng.uniform(-BOX_JITTER, BOX_JITTER) * bw for v in (left, right))
    width, height = max(2.0, right - left), max(2.0, bottom - top)
    box = Detection(left=left, top=top, width=width, height=height, group="", score=1.0)
    framed = cut_out(Image.fromarray(img), box, (w, h)).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(framed)


def phone_effects(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What the phone does to a photo, at random: light and colour cast, blur, sensor noise, JPEG. Nothing moves,
    so boxes drawn on the photo stay right (the detector's scenes use it too)."""
    if rng.random() < 0.8:
        img = light(
            img,
            brightness=rng.uniform(0.45, 1.25),
            contrast=rng.uniform(0.6, 1.25),
            gamma=rng.uniform(0.8, 1.25),
            gains=tuple(np.asarray(temperature(rng.uniform(-0.12, 0.12))) * rng.uniform(0.94, 1.06, size=3)),
        )
    if rng.random() < 0.3:
        img = blur(img, rng.uniform(0.3, 2.4))
    if rng.random() < 0.35:
        img = noise(img, rng.uniform(2, 22), rng, chroma=rng.uniform(0.0, 0.5))
    if rng.random() < 0.35:
        img = jpeg(img, int(rng.integers(5, 75)))
    return img
