"""How often crop=auto reads a photo whole, per threshold of its packshot rule, on validation-split photos.

fashionsearch.main_product reads a photo whole when the detector finds nothing, its best box covers half the
photo, or the photo is a packshot: at least PACKSHOT_WHITE_BORDER of its border is the photo's own white and the
product spans at least PACKSHOT_MIN_SPAN of its width or height. This runs the detector in process on each photo,
decoded as the gateway decodes it (services/gateway/crops.decode_photo), and counts the photos read whole for
candidate thresholds, among:

- the catalogue's own photos of validation-split products (JPEG quality 92): all of them, and the cut-out pool
  (training/scenes.py: products with a white background, bench/outfit_search.py's packshot row), also under dim,
  warm and cool light (the robustness suite's strongest) and random phone effects;
- one validation product on a texture or a training photograph (scenes.TRAIN_PHOTOS; the held-out one is kept
  for the test rows), anywhere at any size and small in the frame, as bench/outfit_search.py draws them, also
  through phone effects, and on a plain wall of a random colour.

A packshot should be read whole (as the catalogue's photos were trained), a scene should not (its product is cut
out). Choose on these; bench/outfit_search.py reports on the test split.

    python bench/packshot_rule.py [--singles 300] [--packshots 1000] [--detector models/detector]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.outfit_search import DEFAULT_DATA, jpeg, single_photos  # noqa: E402
from fashionsearch import main_product  # noqa: E402
from fashionsearch.images import ImageLimits  # noqa: E402
from services.gateway.crops import decode_photo  # noqa: E402
from training import data, detector_eval, scenes, shopper  # noqa: E402
from training.evaluate import load_model  # noqa: E402

BORDERS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.1)  # 1.1: no packshot rule (what the detector alone reads whole)
SPANS = (0.25, 0.3, 0.35, 0.4, 0.5)
SEED = 20261208


def photo_set(pool: scenes.Products, val: data.Dataset, singles: int, packshots: int) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(SEED)
    usable = list(pool.images[np.sort(rng.permutation(len(pool))[:packshots])])
    kinds = {
        "catalogue photo (every product)": list(val.images[np.sort(rng.permutation(len(val))[:packshots])]),
        "catalogue photo (the cut-out pool)": usable,
    }
    lights = {
        "brightness x0.4": partial(shopper.light, brightness=0.4),
        "warm light (+12%)": partial(shopper.light, gains=shopper.temperature(0.12)),
        "cool light (-12%)": partial(shopper.light, gains=shopper.temperature(-0.12)),
    }
    for light, change in lights.items():
        kinds[f"the cut-out pool, {light}"] = [change(image) for image in usable[: packshots // 2]]
    phone = np.random.default_rng(SEED + 1)
    kinds["the cut-out pool, phone effects"] = [shopper.phone_effects(image, phone) for image in usable]
    for layout, label in (("scatter", "anywhere, any size"), ("small", "small in the frame")):
        drawn = single_photos(pool, singles, layout, SEED + len(kinds), scenes.TRAIN_PHOTOS)
        photos = [image for image, _ in drawn]
        kinds[f"one product on a texture or a photograph, {label}"] = photos
        kinds[f"... {label}, phone effects"] = [shopper.phone_effects(image, phone) for image in photos]
        walls = []
        for _ in range(singles):
            canvas = shopper.texture(phone, scenes.TEST_HEIGHT, scenes.TEST_WIDTH, "solid")
            index = [int(phone.integers(0, len(pool)))]
            scene = scenes.compose(phone, scenes.TEST_HEIGHT, scenes.TEST_WIDTH, pool, index, canvas, layout, 15.0)
            walls.append(scene.image)
        kinds[f"one product on a plain wall of a random colour, {label}"] = walls
    return kinds


def table(
    title: str, kinds: dict[str, tuple[list[np.ndarray], list]], name: str, values: Sequence[float], rule: str
) -> None:
    print(f"\n{title}\n")
    print(f"| photo | n | {' | '.join(f'{name} {v}' for v in values)} |")
    print(f"| --- | ---: | {' | '.join('---:' for _ in values)} |")
    for kind, (pixels, found) in kinds.items():
        cells = []
        for value in values:
            knob = {rule: value}
            whole = [
                main_product.main_product(p, f, (p.shape[1], p.shape[0]), **knob) is None
                for p, f in zip(pixels, found, strict=True)
            ]
            cells.append(f"{100 * np.mean(whole):.1f}%")
        print(f"| {kind} | {len(pixels)} | {' | '.join(cells)} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--detector", type=Path, default=REPO_ROOT / "models" / "detector")
    parser.add_argument("--singles", type=int, default=300, help="single-product scenes of each kind")
    parser.add_argument("--packshots", type=int, default=1000, help="catalogue photos of each kind (at most)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    dataset = data.load_dataset(args.data)
    val = dataset.split(data.get_split(dataset), "val")
    spec, session = load_model(args.detector, args.threads)
    kinds = {}
    for kind, images in photo_set(scenes.products(val), val, args.singles, args.packshots).items():
        pixels = [np.asarray(decode_photo(jpeg(image), ImageLimits()).image) for image in images]
        found = detector_eval.detect(session, spec, pixels, score_threshold=None, max_detections=None)
        kinds[kind] = (pixels, found)
    print(f"\nvalidation split, detector {spec.identity}: the share of photos crop=auto reads whole")
    table(
        f"by the white border's threshold (a product spanning {main_product.PACKSHOT_MIN_SPAN} or more)",
        kinds,
        "border >=",
        BORDERS,
        "packshot_border",
    )
    table(
        f"by the product's span (a white border of {main_product.PACKSHOT_WHITE_BORDER} or more)",
        kinds,
        "span >=",
        SPANS,
        "packshot_span",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
