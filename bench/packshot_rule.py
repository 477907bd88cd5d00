"""How often crop=auto's packshot rule reads a photo whole, per threshold, on validation-split photos (no model).

fashionsearch.main_product reads a photo whole when at least PACKSHOT_WHITE_BORDER of its border is the
catalogue's near-white. This counts, for each candidate threshold, the share of photos that reach it, decoded as
the gateway decodes them (services/gateway/crops.decode_photo), among:

- the catalogue's own photos of validation-split products (JPEG quality 92), all of them and the cut-out pool
  (training/scenes.py: products with a white background, as bench/outfit_search.py's packshot row);
- one validation product on a texture or a training photograph (scenes.TRAIN_PHOTOS; the held-out one is kept
  for the test rows), anywhere at any size and small in the frame, as bench/outfit_search.py draws them;
- the same packshots and scenes through random phone effects (light, colour cast, blur, noise, JPEG).

A packshot should reach the threshold (it is read as the catalogue's photos were trained), a scene should not (its
product is cut out). Choose on these, report on the test split (bench/outfit_search.py).

    python bench/packshot_rule.py [--singles 300] [--packshots 1000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.outfit_search import DEFAULT_DATA, jpeg, single_photos  # noqa: E402
from fashionsearch import main_product  # noqa: E402
from fashionsearch.images import ImageLimits  # noqa: E402
from services.gateway.crops import decode_photo  # noqa: E402
from training import data, scenes, shopper  # noqa: E402

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
SEED = 20261208


def border_share(image: np.ndarray) -> float:
    photo = decode_photo(jpeg(image), ImageLimits())
    return main_product.white_border_share(np.asarray(photo.image))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--singles", type=int, default=300, help="single-product scenes of each layout")
    parser.add_argument("--packshots", type=int, default=1000, help="catalogue photos of each kind (at most)")
    args = parser.parse_args()

    dataset = data.load_dataset(args.data)
    val = dataset.split(data.get_split(dataset), "val")
    pool = scenes.products(val)
    rng = np.random.default_rng(SEED)
    catalogue = val.images[np.sort(rng.permutation(len(val))[: args.packshots])]
    usable = pool.images[np.sort(rng.permutation(len(pool))[: args.packshots])]
    kinds: dict[str, list[np.ndarray]] = {
        "catalogue photo (every product)": list(catalogue),
        "catalogue photo (the cut-out pool)": list(usable),
    }
    for layout, label in (("scatter", "anywhere, any size"), ("small", "small in the frame")):
        photos = single_photos(pool, args.singles, layout, SEED + len(kinds), scenes.TRAIN_PHOTOS)
        kinds[f"one product on a texture or a photograph, {label}"] = [image for image, _ in photos]
    phone = np.random.default_rng(SEED + 1)
    for name in list(kinds):
        if name != "catalogue photo (every product)":
            kinds[f"{name}, phone effects"] = [shopper.phone_effects(image, phone) for image in kinds[name]]

    print(
        f"\nvalidation split: the share of photos read whole (white border share >= threshold; border "
        f"{main_product.BORDER:.0%} of the short side; today's threshold {main_product.PACKSHOT_WHITE_BORDER})\n"
    )
    print("| photo | n | " + " | ".join(f">= {t}" for t in THRESHOLDS) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in THRESHOLDS) + " |")
    for name, images in kinds.items():
        shares = np.asarray([border_share(image) for image in images])
        cells = " | ".join(f"{100 * (shares >= t).mean():.1f}%" for t in THRESHOLDS)
        print(f"| {name} | {len(images)} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
