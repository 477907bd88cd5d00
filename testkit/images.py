"""Images for tests and benchmarks."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def large_png(width: int, height: int, *, mode: str = "RGB", seed: int = 0) -> bytes:
    """A real PNG of width x height pixels that stays small as a file (a white page with a product-like block and
    a patch of noise): the shape of the 105 KB PNG that declares 36 megapixels and has to be decoded in full."""
    white = (255, 255, 255, 255)[: len(mode)] if mode in ("RGB", "RGBA") else 255
    image = Image.new(mode, (width, height), white)
    block = (40 + seed % 200, 60, 160, 255)[: len(mode)] if mode in ("RGB", "RGBA") else 90
    image.paste(block, (width // 4, height // 5, width * 3 // 4, height * 4 // 5))
    rng = np.random.default_rng(seed)
    patch = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).convert(mode)
    image.paste(patch, (width // 2, height // 2))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
