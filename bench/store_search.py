"""Filtered top-5 search: Qdrant Edge vs qdrant-client local mode vs NumPy brute force, through the store adapters.

Synthetic vectors (dim 64, the production embedder's size since version 5) with payloads whose subCategory
follows the sample catalogue's distribution; each query is a perturbed stored vector filtered by a subCategory
drawn from the same distribution (what the gateway's default search does). Prints build time, latency p50/p95,
single-thread queries per second and recall@5 against brute force.

    python bench/store_search.py [--sizes 10000,40000,400000] [--queries 200] [--local-max 40000]

qdrant-client's local mode is a pure-Python scan; above --local-max points it is skipped (the table says so).
"""

from __future__ import annotations

import argparse
import collections
import csv
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from qdrant_client import QdrantClient  # noqa: E402

from fashionsearch.store import EmbedderIdentity, StoredPoint  # noqa: E402
from fashionsearch.store.edge import EdgeIndex  # noqa: E402
from fashionsearch.store.qdrant_server import QdrantServerIndex  # noqa: E402

DIM = 64
TOP_K = 5
EMBEDDER = EmbedderIdentity("synthetic", "1")
BATCH = 1000


def subcategory_distribution() -> tuple[list[str], np.ndarray]:
    styles = REPO_ROOT / "sample_catalogue" / "styles.csv"
    counts: collections.Counter[str] = collections.Counter()
    if styles.is_file():
        with styles.open(encoding="utf-8") as f:
            counts.update(row["subCategory"] for row in csv.DictReader(f) if row["subCategory"])
    if not counts:
        counts.update({f"Category{i}": 40 - i for i in range(40)})
    names = sorted(counts)
    weights = np.array([counts[n] for n in names], dtype=np.float64)
    return names, weights / weights.sum()


class NumpyBruteForce:
    """Exact filtered search as a plain NumPy scan: one matrix, an index of rows per subCategory."""

    def __init__(self) -> None:
        self._ids: list[int] = []
        self._vectors: list[np.ndarray] = []
        self._categories: list[str] = []
        self._matrix = np.empty((0, DIM), np.float32)
        self._rows: dict[str, np.ndarray] = {}

    def ensure_collection(self, dim: int, embedder: EmbedderIdentity) -> None:
        pass

    def upsert(self, points: list[StoredPoint]) -> None:
        for point in points:
            self._ids.append(point.id)
            self._vectors.append(point.vector)
            self._categories.append(point.payload["subCategory"])
        self._rows = {}

    def search(self, vector: np.ndarray, top_k: int, filters: dict[str, tuple[str, ...]]) -> list[StoredPoint]:
        if not self._rows:
            self._matrix = np.asarray(self._vectors, dtype=np.float32)
            by_category: dict[str, list[int]] = collections.defaultdict(list)
            for row, category in enumerate(self._categories):
                by_category[category].append(row)
            self._rows = {k: np.asarray(v) for k, v in by_category.items()}
        rows = np.concatenate([self._rows.get(v, np.empty(0, np.int64)) for v in filters["subCategory"]])
        if rows.size == 0:
            return []
        distances = np.linalg.norm(self._matrix[rows] - vector, axis=1)
        best = np.argpartition(distances, min(top_k, rows.size - 1))[:top_k]
        best = best[np.argsort(distances[best])]
        return [StoredPoint(id=self._ids[rows[i]], vector=vector, payload={}) for i in best]

    def close(self) -> None:
        pass


def make_points(n: int, rng: np.random.Generator, names: list[str], p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    categories = rng.choice(len(names), size=n, p=p)
    return vectors, categories


def build(index, vectors: np.ndarray, categories: np.ndarray, names: list[str]) -> float:
    started = time.perf_counter()
    index.ensure_collection(DIM, EMBEDDER)
    for start in range(0, len(vectors), BATCH):
        index.upsert(
            [
                StoredPoint(
                    id=i + 1,
                    vector=vectors[i],
                    payload={"subCategory": names[categories[i]], "name": f"item {i + 1}", "gender": "Men"},
                )
                for i in range(start, min(start + BATCH, len(vectors)))
            ]
        )
    return time.perf_counter() - started


def run_queries(index, queries: list[tuple[np.ndarray, str]]) -> tuple[list[float], list[list[int]]]:
    index.search(queries[0][0], TOP_K, {"subCategory": (queries[0][1],)})  # warm-up
    latencies, answers = [], []
    for vector, category in queries:
        started = time.perf_counter()
        hits = index.search(vector, TOP_K, {"subCategory": (category,)})
        latencies.append(time.perf_counter() - started)
        answers.append([h.id for h in hits])
    return latencies, answers


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,40000,400000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--local-max", type=int, default=40000, help="largest size to run qdrant-client local at")
    parser.add_argument("--local-queries", type=int, default=50, help="queries for qdrant-client local mode")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    warnings.filterwarnings("ignore", message="(Local mode|Payload indexes)")
    names, p = subcategory_distribution()
    rows: list[tuple[Any, ...]] = []
    for n in (int(s) for s in args.sizes.split(",")):
        rng = np.random.default_rng(args.seed)
        vectors, categories = make_points(n, rng, names, p)
        picks = rng.integers(0, n, size=args.queries)
        queries = [
            (vectors[i] + rng.normal(scale=0.3, size=DIM).astype(np.float32), names[rng.choice(len(names), p=p)])
            for i in picks
        ]
        reference: list[list[int]] | None = None
        with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
            engines: list[tuple[str, Callable[[], Any], int]] = [
                ("numpy brute force", NumpyBruteForce, args.queries),
                ("qdrant edge (exact)", lambda: EdgeIndex(Path(tmp) / "edge", "bench", search_threads=1), args.queries),
                (
                    "qdrant-client local",
                    lambda: QdrantServerIndex(QdrantClient(location=":memory:"), "bench"),
                    args.local_queries,
                ),
            ]
            for label, factory, count in engines:
                if label.startswith("qdrant-client") and n > args.local_max:
                    rows.append(
                        (n, label, None, None, None, None, None, f"skipped: above --local-max {args.local_max}")
                    )
                    continue
                index = factory()
                try:
                    build_s = build(index, vectors, categories, names)
                    latencies, answers = run_queries(index, queries[:count])
                finally:
                    index.close()
                if reference is None:
                    reference = answers
                recall = statistics.mean(
                    len(set(a) & set(r)) / max(1, len(r)) for a, r in zip(answers, reference, strict=False)
                )
                rows.append(
                    (
                        n,
                        label,
                        build_s,
                        pct(latencies, 50),
                        pct(latencies, 95),
                        1 / statistics.mean(latencies),
                        recall,
                        "",
                    )
                )
                print(f"  done {label} at {n}", file=sys.stderr, flush=True)

    print(f"\nFiltered top-{TOP_K} search, dim {DIM}, filter = one subCategory (sample catalogue distribution)")
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, one search thread\n")
    header = (
        f"| {'points':>7} | {'engine':<21} | {'build s':>8} | {'p50 ms':>8} | {'p95 ms':>8} | {'q/s':>8} | recall@5 |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for n, label, build_s, p50, p95, qps, recall, note in rows:
        if build_s is None:
            print(f"| {n:>7} | {label:<21} | {note}")
            continue
        print(f"| {n:>7} | {label:<21} | {build_s:8.1f} | {p50:8.2f} | {p95:8.2f} | {qps:8.1f} | {recall:8.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
