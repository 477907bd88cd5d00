"""Filters far from the query on Qdrant Edge's graph: recall@5 of graph settings that EdgeTuning does not expose.

A filtered search whose subCategory is not the query's own (a shoe photo filtered to Topwear) is the graph's weak
case (bench/README.md). This builds one collection with the given HNSW parameters straight through qdrant-edge (the
bench's catalogue: real embedder vectors and synthetic ones around them, bench/store_search.py), and measures, for
each hnsw_ef and ACORN setting, recall@5 against exact and p50 for: unfiltered, the query's own subCategory, and
a far one (the catalogue's distribution without the query's own), with the subCategories that lose most. With
``--exposed K`` it also measures what the graph's answer merged with an exact scan of the filter's "exposed" points
would reach (a point is exposed when one of its K nearest neighbours is of another subCategory; computed with
NumPy, so keep --points at 200k or less).

    python bench/store_far_filters.py --points 100000 --full-scan 2000 [--m 16] [--payload-m 16]
        [--ef-construct 100] [--segments 2] [--ef 128,512] [--acorn 0,0.5] [--exposed 10] [--dir /var/tmp]

``--full-scan`` is in points (filters matching fewer are answered exactly); 2,000 at 100k puts the same
subCategories on the graph as the default 20,000 does at 1M. ``--m 0`` builds only a graph per subCategory.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import qdrant_edge as qe

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.store_search import RARE, exact_answers, far_weights, make_catalogue  # noqa: E402

DIM = 32


def build(folder: Path, vectors: np.ndarray, cats: np.ndarray, args: argparse.Namespace) -> tuple[qe.EdgeShard, float]:
    def kilobytes(points: int) -> int:
        return max(1, -(-points * DIM * 4 // 1024))

    config = qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Euclid),
        hnsw_config=qe.HnswIndexConfig(
            m=args.m,
            ef_construct=args.ef_construct,
            full_scan_threshold=kilobytes(args.full_scan),
            max_indexing_threads=0,
            payload_m=args.payload_m,
        ),
        optimizers=qe.EdgeOptimizersConfig(default_segment_number=args.segments, indexing_threshold=kilobytes(10_000)),
        max_search_threads=1,
    )
    shard = qe.EdgeShard.create(str(folder), config)
    shard.update(qe.UpdateOperation.create_field_index("subCategory", qe.PayloadSchemaType.Keyword))
    for start in range(0, len(vectors), 1000):
        batch = [
            qe.Point(start + i + 1, v.tolist(), {"subCategory": str(cats[start + i])})
            for i, v in enumerate(vectors[start : start + 1000])
        ]
        shard.update(qe.UpdateOperation.upsert_points(batch))
    started = time.process_time()
    shard.optimize()
    return shard, time.process_time() - started


def exposed_points(vectors: np.ndarray, cats: np.ndarray, k: int) -> np.ndarray:
    """True for each point one of whose k nearest neighbours has another subCategory (exact, in blocks)."""
    codes = np.unique(cats, return_inverse=True)[1]
    norms = (vectors**2).sum(1)
    exposed = np.zeros(len(vectors), bool)
    for start in range(0, len(vectors), 1000):
        rows = slice(start, start + 1000)
        d = norms[rows, None] - 2 * vectors[rows] @ vectors.T + norms[None]
        nearest = np.argpartition(d, k + 1, axis=1)[:, : k + 1]
        exposed[rows] = (codes[nearest] != codes[rows, None]).any(1)
    return exposed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--payload-m", type=int, default=16)
    parser.add_argument("--ef-construct", type=int, default=100)
    parser.add_argument("--segments", type=int, default=2)
    parser.add_argument("--full-scan", type=int, default=2_000, help="points; filters matching fewer: exact")
    parser.add_argument("--ef", default="128,512")
    parser.add_argument("--acorn", default="0,0.5", help="ACORN max_selectivity values (0: off)")
    parser.add_argument("--exposed", type=int, default=0, help="K: also graph + exact scan of exposed points")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    vectors, cats, source = make_catalogue(args.points, DIM, args.seed, True)
    rng = np.random.default_rng(args.seed + 1)
    picks = rng.integers(0, args.points, size=args.queries)
    sample = vectors[rng.integers(0, args.points, size=(2, 500))]
    spread = float(np.median(np.linalg.norm(sample[0] - sample[1], axis=1)))
    queries = (vectors[picks] + rng.normal(scale=0.03 * spread / np.sqrt(DIM), size=(args.queries, DIM))).astype(
        np.float32
    )
    counts = collections.Counter(cats.tolist())
    names = sorted(counts)
    weights = np.asarray([counts[c] for c in names], np.float64)
    own = [str(c) for c in cats[picks]]
    kinds: dict[str, list[str | None]] = {
        "unfiltered": [None] * args.queries,
        "own": list[str | None](own),
        "far": [str(rng.choice(names, p=far_weights(names, weights, o))) for o in own],
    }
    reference = {kind: exact_answers(vectors, cats, queries, f) for kind, f in kinds.items()}
    exposed = exposed_points(vectors, cats, args.exposed) if args.exposed else None

    work = Path(tempfile.mkdtemp(prefix="bench-far-", dir=args.dir))
    rows = []
    try:
        shard, build_cpu = build(work / "shard", vectors, cats, args)
        for ef in (int(e) for e in args.ef.split(",")):
            for acorn in (float(a) for a in args.acorn.split(",")):
                acorn_params = qe.AcornSearchParams(enable=True, max_selectivity=acorn) if acorn > 0 else None
                params = qe.SearchParams(hnsw_ef=ef, acorn=acorn_params)
                for kind, filters in kinds.items():
                    latencies, found, merged = [], [], []
                    for q, value, want in zip(queries, filters, reference[kind], strict=True):
                        where = (
                            qe.Filter(must=[qe.FieldCondition("subCategory", match=qe.MatchValue(value))])
                            if value is not None
                            else None
                        )
                        request = qe.QueryRequest(
                            limit=5, query=qe.Query.Nearest(q.tolist()), filter=where, params=params
                        )
                        started = time.perf_counter()
                        got = [int(p.id) for p in shard.query(request)]
                        latencies.append(time.perf_counter() - started)
                        found.append(len(set(got) & set(want)) / 5)
                        if exposed is not None and value is not None:
                            extra = np.flatnonzero((cats == value) & exposed)
                            candidates = {int(i) + 1 for i in extra} | set(got)
                            ids = np.asarray(sorted(candidates))
                            d = ((vectors[ids - 1] - q) ** 2).sum(1)
                            merged.append(len(set(ids[np.argsort(d)[:5]].tolist()) & set(want)) / 5)
                    by_value: dict[str, list[float]] = collections.defaultdict(list)
                    for value, r in zip(filters, found, strict=True):
                        by_value[str(value)].append(r)
                    worst = sorted((float(np.mean(r)), v) for v, r in by_value.items() if v != "None")[:3]
                    rows.append(
                        f"| {ef:4d} | {acorn:3.1f} | {kind:<10} | {np.percentile(latencies, 50) * 1000:5.2f} |"
                        f" {np.mean(found):6.3f} | {np.mean(merged) if merged else float('nan'):6.3f} | "
                        + ", ".join(f"{v} ({counts[v]:,}) {r:.2f}" for r, v in worst)
                        + " |"
                    )
                    print(rows[-1], file=sys.stderr, flush=True)
        shard.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.points:,} points ({source}), dim {DIM}, {args.queries} queries per set; rare value {RARE} too")
    print(
        f"m {args.m}, payload_m {args.payload_m}, ef_construct {args.ef_construct}, {args.segments} segments,"
        f" exact below {args.full_scan:,} matching points; graph build {build_cpu:.0f} CPU s"
    )
    if exposed is not None:
        print(f"exposed points (K={args.exposed}): {exposed.mean():.1%} of the catalogue")
    print("\n| ef | ACORN | filter | p50 ms | recall@5 | + exposed | worst subCategories (points) recall |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
