"""Synthetic catalogues for the indexer tests: JPEGs of distinct colours plus a styles.csv or a JSONL manifest."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

from fashionsearch.catalogue import STYLES_COLUMNS

STYLES_HEADER = list(STYLES_COLUMNS)


def product_jpeg(i: int, *, variant: int = 0) -> bytes:
    """A 60x80 JPEG that differs per product (colour from the id) and per variant (a stripe)."""
    colour = ((i * 37 + variant * 91) % 256, (i * 71) % 256, (i * 113 + 50) % 256)
    image = Image.new("RGB", (60, 80), colour)
    image.paste((20, 20, 20), (0, 30 + variant % 30, 60, 38 + variant % 30))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def styles_row(i: int) -> list[str]:
    gender = ("Men", "Women")[i % 2]
    sub = ("Topwear", "Bottomwear", "Shoes")[i % 3]
    return [str(i), gender, "Apparel", sub, "Tshirts", "Blue", "Summer", "2012", "Casual", f"Product {i}, size M"]


def write_dataset(root: Path, ids: range | list[int], *, images: bool = True) -> Path:
    """A dataset folder like the real one: styles.csv (with an unquoted comma in every name) + images/<id>.jpg."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = [",".join(STYLES_HEADER)]
    for i in ids:
        lines.append(",".join(styles_row(i)))
        if images:
            (root / "images" / f"{i}.jpg").write_bytes(product_jpeg(i))
    (root / "styles.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path
