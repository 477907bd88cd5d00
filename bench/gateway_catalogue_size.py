"""The gateway's Search latency against the size of its catalogue: the sample catalogue against a large one (issue 29).

Builds one Qdrant Edge store per size in the gateway's own layout (the served embedder's vectors of the dataset's
photos, bench/catalogue_vectors.py, with their real payloads; beyond the dataset, synthetic points around real ones
as bench/store_search.py makes them, each carrying the payload of the product it was made from, under ids from
SYNTHETIC_ID_BASE; then optimize(), the indexer's rebuild). Then, in rounds that alternate the sizes, starts the
classifier, embedder and gateway as processes on that store (no detector: crop=auto reads a packshot whole either
way) and times Search from this process over gRPC on loopback, one call at a time, with the gateway's defaults
(filtered by the predicted subCategory): p50/p95/p99 per size and the store's own share, read from the gateway's
``fashionsearch_store_duration_seconds{operation="search"}``. The photos are the catalogue photos of test-split
products, the same ones for every size.

    python bench/gateway_catalogue_size.py [--sizes 998,1000000] [--runs 300] [--rounds 2] [--dir /var/tmp]
        [--env GATEWAY_STORE_SEARCH_THREADS=2 --env GATEWAY_STORE_HNSW_EF=64]

``--env`` sets a gateway variable for every size (deploy/README.md's settings for a catalogue of several graphs).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import grpc  # noqa: E402

from bench.catalogue_vectors import dataset_payloads, load_or_embed  # noqa: E402
from bench.store_search import points_around  # noqa: E402
from fashionsearch.model_contract import ModelSpec  # noqa: E402
from fashionsearch.store import EmbedderIdentity, StoredPoint, open_catalog  # noqa: E402
from fashionsearch.v1 import gateway_pb2, gateway_pb2_grpc  # noqa: E402
from testkit.process_stack import ProcessStack  # noqa: E402
from training import data  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("FASHIONSEARCH_DATA", REPO_ROOT.parent / "shared/data/fashion-product-images-small"))
SYNTHETIC_ID_BASE = 10_000_000  # above every dataset id
WARM_UP = 30
TIMEOUT_S = 30
UPSERT_BATCH = 1000


def catalogue(size: int, ids: np.ndarray, vectors: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point ids, vectors, the dataset id whose payload each point carries): the first `size` real points, or all
    of them and synthetic ones around them (bench/store_search.py's)."""
    if size <= len(ids):
        return ids[:size], vectors[:size], ids[:size]
    points, picks = points_around(vectors, size, np.random.default_rng(seed))
    point_ids = np.concatenate([ids, SYNTHETIC_ID_BASE + np.arange(size - len(ids))])
    return point_ids, points, ids[picks]


def build_store(
    folder: Path, size: int, ids: np.ndarray, vectors: np.ndarray, stored: dict[int, dict[str, object]], spec: ModelSpec
) -> tuple[int, float]:
    """The store the gateway opens from GATEWAY_DATA_DIR=folder; (points, seconds to build and optimize)."""
    started = time.perf_counter()
    point_ids, points, sources = catalogue(size, ids, vectors, seed=size)
    index = open_catalog(data_dir=folder).live("catalogue")
    try:
        index.ensure_collection(points.shape[1], EmbedderIdentity(model=spec.name, version=spec.version))
        for start in range(0, len(points), UPSERT_BATCH):
            rows = range(start, min(start + UPSERT_BATCH, len(points)))
            index.upsert(
                [StoredPoint(id=int(point_ids[k]), vector=points[k], payload=stored[int(sources[k])]) for k in rows]
            )
            index.build_full_segment()
        index.optimize()
        return index.count(), time.perf_counter() - started
    finally:
        index.close()


def store_search_seconds(metrics_url: str) -> tuple[float, float]:
    """(sum, count) of the gateway's store search timings so far."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()  # noqa: S310 - loopback only
    values = {}
    for suffix in ("sum", "count"):
        pattern = rf'^fashionsearch_store_duration_seconds_{suffix}\{{operation="search"\}} (\S+)$'
        match = re.search(pattern, text, re.MULTILINE)
        values[suffix] = float(match.group(1)) if match else 0.0
    return values["sum"], values["count"]


def timed_searches(stack: ProcessStack, photos: list[bytes], runs: int) -> tuple[list[float], float]:
    """Latencies (ms) of `runs` default Searches, one at a time, and the store's mean search ms meanwhile."""
    metrics_url = f"http://127.0.0.1:{stack.metrics_ports['gateway']}/metrics"
    with grpc.insecure_channel(stack.address("gateway")) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for k in range(WARM_UP):
            stub.Search(gateway_pb2.SearchRequest(image=photos[k % len(photos)], top_k=5), timeout=TIMEOUT_S)
        before = store_search_seconds(metrics_url)
        latencies = []
        for k in range(runs):
            request = gateway_pb2.SearchRequest(image=photos[k % len(photos)], top_k=5)
            started = time.perf_counter()
            stub.Search(request, timeout=TIMEOUT_S)  # fewer than 5 hits where a subCategory has fewer items
            latencies.append(1000 * (time.perf_counter() - started))
        after = store_search_seconds(metrics_url)
    store_ms = 1000 * (after[0] - before[0]) / max(after[1] - before[1], 1)
    return latencies, store_ms


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--sizes", default="998,1000000", help="catalogue sizes, comma-separated")
    parser.add_argument("--runs", type=int, default=300, help="timed searches per size and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, each starting a stack per size in turn")
    parser.add_argument("--photos", type=int, default=200, help="distinct query photos (test-split packshots)")
    parser.add_argument("--dir", type=Path, default=None, help="where the stores are built (a temporary folder)")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the gateway, for every size")
    args = parser.parse_args()
    gateway_env = {"GATEWAY_LOG_LEVEL": "WARNING"}
    for setting in args.env:
        name, equals, value = setting.partition("=")
        if not equals or not name.startswith("GATEWAY_"):
            parser.error(f"--env takes GATEWAY_NAME=VALUE, not {setting!r}")
        gateway_env[name] = value
    sizes = [int(s) for s in args.sizes.split(",")]

    dataset = data.load_dataset(args.data)
    split = data.get_split(dataset)
    test = dataset.split(split, "test").at_most(args.photos, seed=1)
    photos = []
    for image in test.images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=92)
        photos.append(buffer.getvalue())
    embedder_dir = args.models / "embedder"
    ids, vectors, _ = load_or_embed(args.data, embedder_dir)
    stored = dataset_payloads(dataset)
    keep = np.asarray([int(i) in stored for i in ids])
    ids, vectors = ids[keep], vectors[keep].astype(np.float32)
    spec = ModelSpec.load(embedder_dir)

    with tempfile.TemporaryDirectory(prefix="gateway-size-", dir=args.dir) as tmp:
        roots = {size: Path(tmp) / str(size) for size in sizes}
        built = {}
        for size, root in roots.items():
            built[size] = build_store(root / "store", size, ids, vectors, stored, spec)
            print(f"{size}: {built[size][0]} points built in {built[size][1]:.0f} s", flush=True)
        results: dict[int, list[tuple[list[float], float]]] = {size: [] for size in sizes}
        for round_number in range(args.rounds):
            for size in sizes:
                stack = ProcessStack(
                    roots[size],
                    classifier_model_dir=args.models / "classifier",
                    embedder_model_dir=embedder_dir,
                    gateway_env=gateway_env,
                )
                stack.start()
                try:
                    results[size].append(timed_searches(stack, photos, args.runs))
                finally:
                    stack.stop()
                latencies, store_ms = results[size][-1]
                print(f"round {round_number + 1}, {size}: p50 {statistics.median(latencies):.2f} ms", flush=True)

    base = sizes[0]
    base_p50 = statistics.median([v for latencies, _ in results[base] for v in latencies])
    settings = ", ".join(args.env) or "the gateway's defaults"
    print(f"\nSearch, gRPC, concurrency 1, {settings}; {args.runs} searches per size and round\n")
    print("| catalogue | round | p50 ms | p95 ms | p99 ms | store search, mean ms |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in sizes:
        for k, (latencies, store_ms) in enumerate(results[size]):
            p50, p95, p99 = (percentile(latencies, q) for q in (50, 95, 99))
            print(f"| {built[size][0]:,} | {k + 1} | {p50:.2f} | {p95:.2f} | {p99:.2f} | {store_ms:.2f} |")
    print(f"\n| catalogue | p50 ms, all rounds | above {built[base][0]:,} |")
    print("| ---: | ---: | ---: |")
    for size in sizes:
        p50 = statistics.median([v for latencies, _ in results[size] for v in latencies])
        print(f"| {built[size][0]:,} | {p50:.2f} | {p50 - base_p50:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
