"""The served embedder's vectors of the dataset's photos, embedded once and cached, for the store benchmarks.

Embeds every photo of the dataset (``styles.csv`` + ``images/``) with models/embedder through onnxruntime, with the
services' own decoding and preprocessing, and writes ``.cache/catalogue-vectors/<name>-<version>-<sha12>.npz``
(ids, vectors, subCategory). A second run with the same model reads the cache.

    python bench/catalogue_vectors.py [--data DIR] [--model models/embedder] [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from fashionsearch.catalogue import FILTER_FIELDS, stored_payload  # noqa: E402
from fashionsearch.images import decode_image  # noqa: E402
from fashionsearch.onnx_model import OnnxModel  # noqa: E402
from services.embedder.model import OnnxEmbedder  # noqa: E402

if TYPE_CHECKING:
    from training import data

DEFAULT_DATA = Path(os.environ.get("FASHIONSEARCH_DATA", REPO_ROOT.parent / "shared/data/fashion-product-images-small"))
CACHE = REPO_ROOT / ".cache" / "catalogue-vectors"
BATCH = 64


def dataset_payloads(dataset: data.Dataset) -> dict[int, dict[str, object]]:
    """Each product's stored payload, as the indexer writes it, by product id."""
    out = {}
    for k, pid in enumerate(dataset.ids.tolist()):
        values = {f: str(dataset.labels[f][k]) for f in FILTER_FIELDS} | {
            "name": str(dataset.labels["productDisplayName"][k]),
            "image_ref": f"images/{pid}.jpg",
        }
        out[int(pid)] = stored_payload(values)
    return out


def cache_path(model_dir: Path) -> Path:
    model = OnnxModel(model_dir, expected_kind="embedder")
    return CACHE / f"{model.spec.name}-{model.spec.version}-{model.sha256[:12]}.npz"


def load_or_embed(data: Path, model_dir: Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, vectors, subCategory per id), from the cache when this model has embedded this dataset before."""
    path = cache_path(model_dir)
    if path.is_file():
        cached = np.load(path)
        if limit is None or len(cached["ids"]) >= limit:
            return cached["ids"][:limit], cached["vectors"][:limit], cached["subcategories"][:limit]
    embedder = OnnxEmbedder(OnnxModel(model_dir, expected_kind="embedder"))
    with (data / "styles.csv").open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if (data / "images" / f"{r['id']}.jpg").is_file()][:limit]
    ids: list[int] = []
    subcategories: list[str] = []
    vectors: list[np.ndarray] = []
    started = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        images = [
            np.asarray(decode_image((data / "images" / f"{r['id']}.jpg").read_bytes(), target_size=embedder.input_size))
            for r in batch
        ]
        vectors.append(embedder.embed(images))
        ids.extend(int(r["id"]) for r in batch)
        subcategories.extend(r["subCategory"] for r in batch)
        if start // BATCH % 50 == 0:
            done = start + len(batch)
            print(f"  {done} photos, {done / (time.perf_counter() - started):.0f}/s", file=sys.stderr, flush=True)
    result = (np.asarray(ids, np.int64), np.concatenate(vectors).astype(np.float32), np.asarray(subcategories))
    if limit is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, ids=result[0], vectors=result[1], subcategories=result[2])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "embedder")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    ids, vectors, _ = load_or_embed(args.data, args.model, args.limit)
    print(
        f"{len(ids)} vectors of dim {vectors.shape[1]} in {time.perf_counter() - started:.0f} s:",
        cache_path(args.model),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
