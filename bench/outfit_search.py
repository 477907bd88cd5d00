"""Outfit search and crop=auto measured through the running services, from an outside client (issue 28).

Starts the classifier, embedder, detector and gateway as separate processes (the committed models, or the folders
given), with the whole dataset in the gateway's Qdrant Edge store (the served embedder's vectors, from
bench/catalogue_vectors.py's cache), then, from this process over gRPC on loopback, one call at a time:

- SearchOutfit p50 for a 600x800 JPEG with 3 products (the first 3-product photo of the composite test split), and
  Search's with crop=none and crop=auto, for that photo and for a catalogue packshot;
- on the composite test split (training/scenes.py: test-split products only, 2 to 4 a photo): a product is found
  when a returned box has IoU >= 0.5 with it and that item's top-5 hits hold its articleType; the share of products
  found, of photos with every product found, and the box recall and precision (IoU >= 0.5, any group);
- single-product photos through Search, crop=none against crop=auto: the catalogue packshot itself (of the
  products with a white background), any catalogue photo of a test product, one test product on a texture or a
  real photograph, and one small in the frame: articleType and masterCategory accuracy of
  the predicted attributes and precision@5 of the hits' articleType.

    python bench/outfit_search.py [--scenes 200] [--singles 200] [--runs 40] [--detector models/detector]
        [--outfit-flip-test on|off] [--split test|val] [--gateway-env NAME=VALUE ...]

`--split val` measures on validation-split products instead (composite scenes of the seed tune-detector uses, and
single photos of another seed): the split to choose a setting or a model on; the test split only reports.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import grpc  # noqa: E402

from bench.catalogue_vectors import dataset_payloads, load_or_embed  # noqa: E402
from fashionsearch.detection import box_iou  # noqa: E402
from fashionsearch.model_contract import ModelSpec  # noqa: E402
from fashionsearch.store import EmbedderIdentity, StoredPoint, open_catalog  # noqa: E402
from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc  # noqa: E402
from testkit.process_stack import ProcessStack  # noqa: E402
from training import data, scenes  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("FASHIONSEARCH_DATA", REPO_ROOT.parent / "shared/data/fashion-product-images-small"))
IOU = 0.5
TOP_K = 5
SINGLE_SEED = 20261207
TIMEOUT_S = 60


def jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def build_store(root: Path, dataset: data.Dataset, data_dir: Path, embedder_dir: Path) -> int:
    """The whole dataset in a Qdrant Edge store under root (the gateway's GATEWAY_DATA_DIR), written directly."""
    ids, vectors, _ = load_or_embed(data_dir, embedder_dir)
    spec = ModelSpec.load(embedder_dir)
    payloads = dataset_payloads(dataset)
    index = open_catalog(data_dir=root).live("catalogue")
    try:
        index.ensure_collection(vectors.shape[1], EmbedderIdentity(model=spec.name, version=spec.version))
        points = []
        for pid, vector in zip(ids.tolist(), vectors, strict=True):
            if int(pid) in payloads:
                points.append(StoredPoint(id=int(pid), vector=vector, payload=payloads[int(pid)]))
        for start in range(0, len(points), 1000):
            index.upsert(points[start : start + 1000])
        index.optimize()
        return index.count()
    finally:
        index.close()


def single_photos(
    pool: scenes.Products, count: int, layout: str, seed: int, photo_names: tuple[str, ...] | None = None
) -> list[tuple[np.ndarray, int]]:
    """`count` photos of one product of `pool` each (photo, product id) on a texture or a photograph (the
    held-out one unless `photo_names` says otherwise)."""
    rng = np.random.default_rng(seed)
    photos = scenes.load_photos(scenes.TEST_PHOTOS if photo_names is None else photo_names)
    out: list[tuple[np.ndarray, int]] = []
    while len(out) < count:
        index = int(rng.integers(0, len(pool)))
        donors = pool.images[rng.integers(0, len(pool), size=4)]
        canvas = scenes.background(rng, scenes.TEST_HEIGHT, scenes.TEST_WIDTH, photos, donors, photo_share=0.5)
        scene = scenes.compose(rng, scenes.TEST_HEIGHT, scenes.TEST_WIDTH, pool, [index], canvas, layout, 15.0)
        if len(scene.ids):  # the product stayed visible enough to be in the ground truth
            out.append((scene.image, int(scene.ids[0])))
    return out


def outfit_scores(
    stub: gateway_pb2_grpc.GatewayStub, photos: Sequence[scenes.Scene], article: dict[int, str]
) -> dict[str, float]:
    """Found products, photos with all found, box recall and precision over the composite photos."""
    found = products = all_found = matched_truth = matched_returned = returned_boxes = 0
    for scene in photos:
        request = gateway_pb2.SearchOutfitRequest(image=jpeg(scene.image), top_k=TOP_K)
        items = stub.SearchOutfit(request, timeout=TIMEOUT_S).items
        returned = np.asarray(
            [(i.box.left, i.box.top, i.box.left + i.box.width, i.box.top + i.box.height) for i in items], np.float64
        ).reshape(-1, 4)
        iou = box_iou(scene.boxes, returned)  # (truth, returned)
        every = True
        for t, pid in enumerate(scene.ids.tolist()):
            hit = any(
                iou[t, r] >= IOU and any(h.payload.article_type == article[pid] for h in items[r].hits)
                for r in range(len(items))
            )
            found += hit
            every = every and hit
        products += len(scene.ids)
        all_found += every
        matched_truth += int((iou >= IOU).any(axis=1).sum())
        matched_returned += int((iou >= IOU).any(axis=0).sum())
        returned_boxes += len(items)
    return {
        "products": products,
        "found": found / max(products, 1),
        "all_found": all_found / max(len(photos), 1),
        "box_recall": matched_truth / max(products, 1),
        "box_precision": matched_returned / max(returned_boxes, 1),
    }


def single_scores(
    stub: gateway_pb2_grpc.GatewayStub,
    photos: Sequence[tuple[bytes, int]],
    truth: dict[int, dict[str, str]],
    crop: gateway_pb2.Crop,
) -> dict[str, float]:
    """articleType and masterCategory accuracy of Search's predictions, precision@5 of its hits' articleType."""
    article = master = precision = 0.0
    for image, pid in photos:
        request = gateway_pb2.SearchRequest(image=image, top_k=TOP_K, crop=crop)
        reply = stub.Search(request, timeout=TIMEOUT_S)
        top = {a.attribute: a.labels[0].label for a in reply.attributes if a.labels}
        article += top.get("articleType") == truth[pid]["articleType"]
        master += top.get("masterCategory") == truth[pid]["masterCategory"]
        precision += sum(h.payload.article_type == truth[pid]["articleType"] for h in reply.hits) / TOP_K
    n = max(len(photos), 1)
    return {"articleType": 100 * article / n, "masterCategory": 100 * master / n, "precision@5": precision / n}


def search(stub: gateway_pb2_grpc.GatewayStub, image: bytes, crop: gateway_pb2.Crop) -> object:
    return stub.Search(gateway_pb2.SearchRequest(image=image, crop=crop), timeout=TIMEOUT_S)


def p50_ms(call: Callable[[], object], runs: int) -> tuple[float, float]:
    """(p50, p95) milliseconds of `runs` sequential calls, after 3 unmeasured ones."""
    for _ in range(3):
        call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", type=Path, default=REPO_ROOT / "models", help="holds classifier/, embedder/")
    parser.add_argument("--detector", type=Path, default=REPO_ROOT / "models" / "detector")
    parser.add_argument("--scenes", type=int, default=200, help="composite test photos (2 to 4 products each)")
    parser.add_argument("--singles", type=int, default=200, help="single-product photos of each kind")
    parser.add_argument("--runs", type=int, default=40, help="timed SearchOutfit calls for the p50")
    parser.add_argument(
        "--outfit-flip-test",
        choices=("on", "off"),
        default="on",
        help="the gateway's GATEWAY_OUTFIT_FLIP_TEST (on, its default: SearchOutfit reads the photo and each cut-out "
        "as they are and mirrored)",
    )
    parser.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="whose products the photos show: the test split (reports) or the validation split (choices)",
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a gateway setting for this run, e.g. GATEWAY_PREDICTED_SUBCATEGORY_MASS=0.8 (repeatable)",
    )
    parser.add_argument(
        "--no-photographs",
        action="store_true",
        help="textures only as backgrounds (where scikit-learn, whose wheel holds the held-out photograph, is missing)",
    )
    args = parser.parse_args()
    if args.no_photographs:
        vars(scenes)["TEST_PHOTOS"] = ()  # scenes.test_scenes reads it: no photograph, textures only
    if not (args.detector / "model.json").is_file():
        raise SystemExit(f"no detector in {args.detector} (train one: training/README.md)")

    started = time.perf_counter()
    dataset = data.load_dataset(args.data)
    split = data.get_split(dataset)
    test = scenes.split_products(dataset, split, args.split)
    # validation scenes: tune-detector's seed; the single photos below take another seed on either split
    outfits = scenes.test_scenes(test, args.scenes, scenes.TEST_SEED + 1 if args.split == "val" else scenes.TEST_SEED)
    row = {int(i): k for k, i in enumerate(dataset.ids)}
    truth = {pid: {f: str(dataset.labels[f][k]) for f in ("articleType", "masterCategory")} for pid, k in row.items()}
    packshots = [(jpeg(test.images[k]), int(test.ids[k])) for k in range(min(args.singles, len(test)))]
    single_seed = SINGLE_SEED + (1000 if args.split == "val" else 0)
    catalogue = dataset.split(split, args.split).at_most(args.singles, seed=single_seed)
    singles = {
        "packshot as in the catalogue": packshots,
        # Every kind of catalogue photo, those without a white background too (a model on a studio backdrop).
        "any catalogue photo of a test product": [
            (jpeg(image), int(pid)) for image, pid in zip(catalogue.images, catalogue.ids, strict=True)
        ],
        "one product on a texture or a real photograph": [
            (jpeg(img), pid) for img, pid in single_photos(test, args.singles, "scatter", single_seed)
        ],
        "one product small in the frame": [
            (jpeg(img), pid) for img, pid in single_photos(test, args.singles, "small", single_seed + 1)
        ],
    }
    three = next(s for s in outfits if len(s.ids) == 3)
    print(f"data and photos ready in {time.perf_counter() - started:.0f} s", flush=True)

    with tempfile.TemporaryDirectory(prefix="outfit-bench-") as tmp:
        root = Path(tmp)
        count = build_store(root / "store", dataset, args.data, args.models / "embedder")
        stack = ProcessStack(
            root,
            classifier_model_dir=args.models / "classifier",
            embedder_model_dir=args.models / "embedder",
            detector_model_dir=args.detector,
            detector=True,
            gateway_env={
                "GATEWAY_LOG_LEVEL": "WARNING",
                "GATEWAY_OUTFIT_FLIP_TEST": str(args.outfit_flip_test == "on").lower(),
                **dict(setting.split("=", 1) for setting in args.gateway_env),
            },
        )
        stack.start()
        try:
            with grpc.insecure_channel(stack.address("gateway")) as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                detector = stub.SearchOutfit(gateway_pb2.SearchOutfitRequest(image=jpeg(three.image)), timeout=60)
                image = jpeg(three.image)
                p50, p95 = p50_ms(
                    lambda: stub.SearchOutfit(gateway_pb2.SearchOutfitRequest(image=image), timeout=TIMEOUT_S),
                    args.runs,
                )
                search_ms = {
                    (photo, crop): p50_ms(partial(search, stub, data, value), args.runs)
                    for photo, data in (("600x800 JPEG, 3 products", image), ("catalogue packshot", packshots[0][0]))
                    for crop, value in (("none", gateway_pb2.CROP_NONE), ("auto", gateway_pb2.CROP_AUTO))
                }
                outfit = outfit_scores(stub, outfits, {pid: t["articleType"] for pid, t in truth.items()})
                single = {
                    (kind, crop): single_scores(stub, photos, truth, value)
                    for kind, photos in singles.items()
                    for crop, value in (("none", gateway_pb2.CROP_NONE), ("auto", gateway_pb2.CROP_AUTO))
                }
        finally:
            stack.stop()

    print(
        f"\ndetector {detector.detector_model.name}:{detector.detector_model.version} ({args.detector}), classifier "
        f"and embedder from {args.models}, {count} products indexed, outfit flip test {args.outfit_flip_test}, "
        f"gateway settings {args.gateway_env or 'as served'}; one client on loopback, one call at a time\n"
    )
    print("| SearchOutfit, 600x800 JPEG, 3 products | p50 ms | p95 ms | runs |")
    print("| --- | --- | --- | --- |")
    print(f"| concurrency 1 | {p50:.1f} | {p95:.1f} | {args.runs} |\n")
    print("| Search, concurrency 1 | crop | p50 ms | p95 ms | runs |")
    print("| --- | --- | --- | --- | --- |")
    for (photo, crop), (p50_search, p95_search) in search_ms.items():
        print(f"| {photo} | {crop} | {p50_search:.1f} | {p95_search:.1f} | {args.runs} |")
    print()
    backgrounds = "textures only" if args.no_photographs else "textures and a held-out photograph"
    split_name = "composite test split" if args.split == "test" else "composite validation scenes"
    print(f"| {split_name} ({len(outfits)} photos, {outfit['products']} products; {backgrounds}) | value |")
    print("| --- | --- |")
    print(f"| products found (box IoU >= 0.5 and its top-5 hold the articleType) | {100 * outfit['found']:.1f}% |")
    print(f"| photos with every product found | {100 * outfit['all_found']:.1f}% |")
    print(f"| box recall (IoU >= 0.5) | {outfit['box_recall']:.3f} |")
    print(f"| box precision (IoU >= 0.5) | {outfit['box_precision']:.3f} |\n")
    print("| single-product photo | crop | articleType % | masterCategory % | precision@5 articleType |")
    print("| --- | --- | --- | --- | --- |")
    for (kind, crop), scores in single.items():
        print(
            f"| {kind} ({len(singles[kind])}) | {crop} | {scores['articleType']:.1f} | {scores['masterCategory']:.1f} "
            f"| {scores['precision@5']:.3f} |"
        )
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
