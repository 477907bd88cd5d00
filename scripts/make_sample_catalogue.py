"""Write the small demo catalogue shipped in `sample_catalogue/` (about 1,000 products, a few MB).

Products are drawn with a fixed seed from the full dataset, spread over article types (square-root
allocation, so rare types still appear and common ones do not swamp the page). The output keeps the dataset's
layout: `styles.csv` with the original 10 columns and `images/<id>.jpg`.

    python scripts/make_sample_catalogue.py --data ../shared/data/fashion-product-images-small --out sample_catalogue
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
from collections import defaultdict
from pathlib import Path

HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with styles.csv and images/")
    parser.add_argument("--out", type=Path, default=Path("sample_catalogue"))
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    by_type: dict[str, list[str]] = defaultdict(list)
    lines = (args.data / "styles.csv").read_text(encoding="utf-8").splitlines()[1:]
    for line in lines:
        fields = line.split(",", 9)
        # Only complete rows with an image: the demo must index cleanly.
        if len(fields) == 10 and all(fields[:9]) and (args.data / "images" / f"{fields[0]}.jpg").is_file():
            by_type[fields[4]].append(line)

    rng = random.Random(args.seed)
    weights = {t: math.sqrt(len(rows)) for t, rows in by_type.items()}
    total = sum(weights.values())
    chosen: list[str] = []
    for article_type in sorted(by_type):
        rows = sorted(by_type[article_type])
        want = min(len(rows), max(1, round(args.size * weights[article_type] / total)))
        chosen.extend(rng.sample(rows, want))
    chosen.sort(key=lambda line: int(line.split(",", 1)[0]))

    images = args.out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for line in chosen:
        product_id = line.split(",", 1)[0]
        shutil.copyfile(args.data / "images" / f"{product_id}.jpg", images / f"{product_id}.jpg")
    (args.out / "styles.csv").write_text(HEADER + "\n" + "\n".join(chosen) + "\n", encoding="utf-8")
    print(f"wrote {len(chosen)} products over {len(by_type)} article types to {args.out}")


if __name__ == "__main__":
    main()
