"""Small synthetic datasets in the shape of the real one (styles.csv + images/), for the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\n"

# (subCategory, articleType) pairs covering the paper's six classes and two others.
KINDS = [
    ("Topwear", "Tshirts"),
    ("Topwear", "Kurtas"),
    ("Bottomwear", "Jeans"),
    ("Dress", "Dresses"),
    ("Saree", "Sarees"),
    ("Loungewear and Nightwear", "Night suits"),
    ("Shoes", "Casual Shoes"),
    ("Watches", "Watches"),
]
COLOURS = ["Black", "White", "Blue", "Red"]


def write_image(path: Path, seed: int, size: tuple[int, int] = (60, 80)) -> None:
    """A JPEG of `size` (width, height) with a seeded colour block, so images differ between ids."""
    rng = np.random.default_rng(seed)
    pixels = np.full((size[1], size[0], 3), 255, dtype=np.uint8)
    colour = rng.integers(0, 256, size=3, dtype=np.uint8)
    top, left = int(rng.integers(0, size[1] // 2)), int(rng.integers(0, size[0] // 2))
    pixels[top : top + size[1] // 2, left : left + size[0] // 2] = colour
    Image.fromarray(pixels).save(path, quality=90)


def make_dataset(root: Path, per_kind: int = 4, first_id: int = 1000) -> list[int]:
    """styles.csv + images/ with per_kind rows of each KINDS entry, ids from first_id; returns the ids."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines, ids = [HEADER], []
    next_id = first_id
    for k, (sub, article) in enumerate(KINDS):
        master = "Apparel" if sub not in ("Shoes", "Watches") else ("Footwear" if sub == "Shoes" else "Accessories")
        for j in range(per_kind):
            colour = COLOURS[j % len(COLOURS)]
            gender = "Men" if j % 2 else "Women"
            lines.append(
                f"{next_id},{gender},{master},{sub},{article},{colour},Summer,2012,Casual,"
                f"Brand {gender} {colour} {article}\n"
            )
            write_image(root / "images" / f"{next_id}.jpg", seed=next_id + k)
            ids.append(next_id)
            next_id += 1
    (root / "styles.csv").write_text("".join(lines), encoding="utf-8")
    return ids


def make_lite_dataset(root: Path) -> None:
    """make_dataset with a validation image of every kind and two seasons and usages, so that every head of the
    lite recipes has more than one class of at least MIN_CLASS_COUNT training images."""
    make_dataset(root, per_kind=12)
    styles = root / "styles.csv"
    rows = styles.read_text().splitlines(keepends=True)
    styles.write_text(
        "".join(
            r.replace(",Summer,2012,Casual,", ",Winter,2012,Formal,") if k % 3 == 0 else r for k, r in enumerate(rows)
        )
    )
