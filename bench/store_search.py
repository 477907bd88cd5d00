"""The embedded store (Qdrant Edge) at catalogue scale: build, memory, disk, latency and recall@5 against exact search.

Points: the served embedder's vectors of the dataset's photos (bench/catalogue_vectors.py, cached) with their real
subCategory; beyond those, synthetic points around them (a real point plus noise at a quarter of its distance to
its nearest neighbour's scale, keeping its subCategory), so the clusters and the subCategory distribution stay the
catalogue's; plus a rare subCategory of 10 points. Without the dataset or the model: clustered synthetic points.

For each size and each quantization setting, a child process builds the collection through the store adapter
(EdgeIndex.upsert in batches of 1000, a graph per EdgeTuning.segment_points points on the way, then optimize(): the
indexer's rebuild), and another child opens it and
searches, so each reports its own memory (RSS, the peak during the build). Query sets: unfiltered, filtered by one
subCategory drawn from the catalogue's distribution (the gateway's default search), and the rare value; each query
is a stored vector plus noise. Search settings: exact, and the graph at several hnsw_ef (ACORN on for filters):
alone ("graph"); with the exposed copies merged in for a filter far from the query ("+ exposed"; edge_exposed.py;
the build flags them after the graph, timed apart: "flag s", and "exposed" is the share of points copied); and, the
served path, with the copies and a wider graph search for such a filter ("+ exp, far N": far_filter_ef N).
Latency per search thread (one thread, p50/p95/p99) and at the gateway's concurrency (its store calls run in
asyncio.to_thread, min(32, cores + 4) threads).

    python bench/store_search.py [--sizes 40000,200000] [--queries 300] [--ef 64,128,256] [--quantization off,on]
        [--far-ef 1024] [--concurrency 6] [--full-scan 20000] [--exposed 10] [--m 16] [--ef-construct 100]
        [--payload-m 16] [--segment-points 2500000] [--dir /var/tmp] [--keep]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import multiprocessing
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from fashionsearch.store import EmbedderIdentity, StoredPoint  # noqa: E402
from fashionsearch.store.edge import EdgeIndex  # noqa: E402
from fashionsearch.store.edge_files import tree_data_bytes  # noqa: E402
from fashionsearch.store.edge_tuning import EdgeTuning  # noqa: E402

TOP_K = 5
BATCH = 1000
RARE = "RareTestValue"
RARE_COUNT = 10
EMBEDDER = EmbedderIdentity("bench", "1")


# --------------------------------------------------------------------------------------------------------------
# Points and the exact answers


def seed_points(dim: int, rng: np.random.Generator, real: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """Real vectors and subCategories when the dataset and the model are here, else clustered synthetic ones."""
    try:
        if not real:
            raise ValueError("--synthetic")
        from bench.catalogue_vectors import DEFAULT_DATA, load_or_embed

        _, vectors, subcategories = load_or_embed(DEFAULT_DATA, REPO_ROOT / "models" / "embedder")
        if vectors.shape[1] == dim:
            return vectors, subcategories, f"{len(vectors)} real embedder vectors + synthetic around them"
    except (OSError, ValueError) as missing:
        print(f"  no real vectors ({missing}): synthetic ones", file=sys.stderr)
    centres = rng.normal(size=(300, dim)).astype(np.float32)
    picks = rng.integers(0, 300, size=40_000)
    names = np.asarray([f"Category{i % 45}" for i in range(300)])
    vectors = centres[picks] + 0.3 * rng.normal(size=(40_000, dim)).astype(np.float32)
    return vectors.astype(np.float32), names[picks], "clustered synthetic vectors"


def points_around(base: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` points: `base` itself, then synthetic points around its rows; and the row of `base` each was made from."""
    dim = base.shape[1]
    # Noise at the scale of each seed point's neighbourhood: the mean distance to a sample of 2,000 points,
    # scaled down, so a synthetic point lies among the real ones of its kind rather than in empty space.
    sample = base[rng.integers(0, len(base), 2000)]
    scale = 0.1 * float(np.median(np.linalg.norm(base[:2000, None, :] - sample[None, :200, :], axis=2)))
    picks = np.concatenate([np.arange(len(base)), rng.integers(0, len(base), n - len(base))])
    vectors = np.empty((n, dim), np.float32)
    for start in range(0, n, 1_000_000):
        rows = picks[start : start + 1_000_000]
        noise = rng.normal(scale=scale / np.sqrt(dim), size=(len(rows), dim)).astype(np.float32)
        noise[: max(0, len(base) - start)] = 0.0  # the real points themselves
        vectors[start : start + len(rows)] = base[rows] + noise
    return vectors, picks


def make_catalogue(n: int, dim: int, seed: int, real: bool) -> tuple[np.ndarray, np.ndarray, str]:
    rng = np.random.default_rng(seed)
    base, categories, source = seed_points(dim, rng, real)
    if n <= len(base):
        vectors, cats = base[:n].copy(), categories[:n].copy()
    else:
        vectors, picks = points_around(base, n, rng)
        cats = categories[picks]
    cats = cats.astype(object)
    cats[rng.choice(n, RARE_COUNT, replace=False)] = RARE
    return vectors, cats.astype(str), source


def far_weights(names: Sequence[str], weights: np.ndarray, own: str) -> np.ndarray:
    """The catalogue's distribution of subCategories without the query's own (and without the rare test value)."""
    kept = weights * np.asarray([n not in (own, RARE) for n in names])
    return kept / kept.sum()


def distance_ratio(vectors: np.ndarray, queries: np.ndarray, answers: list[list[int]], exact: list[list[int]]) -> float:
    """Mean of (distance of the 5th answer) / (distance of the exact 5th): how much farther a miss lies (1.0: none)."""
    ratios: list[float] = []
    for q, got, want in zip(queries, answers, exact, strict=True):
        if len(got) == len(want) and want:
            d_got = float(np.linalg.norm(np.asarray(vectors[got[-1] - 1], np.float64) - q))
            d_want = float(np.linalg.norm(np.asarray(vectors[want[-1] - 1], np.float64) - q))
            ratios.append(d_got / d_want if d_want > 0 else 1.0)
    return float(np.mean(ratios)) if ratios else float("nan")


def exact_answers(
    vectors: np.ndarray, cats: np.ndarray, queries: np.ndarray, filters: Sequence[str | None]
) -> list[list[int]]:
    """Top-5 ids (point id = row + 1) by exact Euclidean distance, in float64 to break no ties by rounding."""
    answers = []
    for q, value in zip(queries, filters, strict=True):
        rows = np.flatnonzero(cats == value) if value is not None else None
        chosen = vectors[rows] if rows is not None else vectors
        d = ((chosen - q) ** 2).sum(axis=1, dtype=np.float64)
        best = np.argsort(d, kind="stable")[:TOP_K] if len(d) <= TOP_K else np.argpartition(d, TOP_K)[:TOP_K]
        best = best[np.argsort(d[best], kind="stable")]
        answers.append([int((rows[i] if rows is not None else i) + 1) for i in best])
    return answers


# --------------------------------------------------------------------------------------------------------------
# Children: build, then search


def _rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def build_child(folder: str, data: str, tuning: EdgeTuning) -> dict[str, float]:
    vectors = np.load(f"{data}/vectors.npy", mmap_mode="r")
    cats = np.load(f"{data}/cats.npy")
    index = EdgeIndex(folder, "bench", search_threads=1, tuning=replace(tuning, exposed_neighbours=0))
    started = time.perf_counter()
    segments_s = 0.0  # the graphs built during the load, one per EdgeTuning.segment_points points
    index.ensure_collection(vectors.shape[1], EMBEDDER)
    for start in range(0, len(vectors), BATCH):
        chunk = np.asarray(vectors[start : start + BATCH])
        index.upsert(
            [
                StoredPoint(id=start + i + 1, vector=v, payload={"subCategory": str(cats[start + i]), "name": "x"})
                for i, v in enumerate(chunk)
            ]
        )
        segment_started = time.perf_counter()
        if index.build_full_segment():
            segments_s += time.perf_counter() - segment_started
    loaded = time.perf_counter()
    index.optimize()
    optimised = time.perf_counter()
    graph_peak = _rss_mib()[1]
    graph = index.graph_points()
    index.close()
    # The exposed copies, timed apart from the graph: optimize() of a graph without copies flags them.
    index = EdgeIndex(folder, "bench", search_threads=1, tuning=tuning)
    flag_started = time.perf_counter()
    index.optimize()
    flagged = time.perf_counter()
    exposed = index.exposed_points()
    index.close()
    return {
        "load_s": loaded - started - segments_s,
        "optimize_s": optimised - loaded + segments_s,
        "flag_s": flagged - flag_started,
        "exposed": exposed / max(1, len(vectors)),
        "graph_points": graph,
        "graph_peak_rss_mib": graph_peak,
        "peak_rss_mib": _rss_mib()[1],
        "cpu_s": resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime,
    }


def _timed(index: EdgeIndex, queries: np.ndarray, filters: Sequence[str | None]) -> tuple[list[float], list[list[int]]]:
    latencies, answers = [], []
    for q, value in zip(queries, filters, strict=True):
        started = time.perf_counter()
        hits = index.search(q, TOP_K, {"subCategory": value} if value else None)
        latencies.append(time.perf_counter() - started)
        answers.append([h.id for h in hits])
    return latencies, answers


def search_child(
    folder: str,
    data: str,
    tuning: EdgeTuning,
    settings: list[tuple[str, bool, int, float, bool, int]],
    concurrency: int,
) -> dict[str, Any]:
    queries = np.load(f"{data}/queries.npy")
    kinds = np.load(f"{data}/query_kinds.npy", allow_pickle=True).item()
    results: dict[str, Any] = {"latency": {}, "answers": {}}
    for label, exact, ef, acorn, exposed, far_ef in settings:
        variant = replace(
            tuning,
            hnsw_ef=ef or tuning.hnsw_ef,
            acorn_max_selectivity=acorn,
            exposed_neighbours=tuning.exposed_neighbours if exposed else 0,
            far_filter_ef=far_ef,
        )
        index = EdgeIndex(folder, "bench", search_threads=1, exact=exact, tuning=variant)
        try:
            _timed(index, queries[:20], [None] * 20)  # warm-up: the first searches page the graph in
            for kind, filters in kinds.items():
                latencies, answers = _timed(index, queries, filters)
                results["latency"][(label, kind)] = latencies
                results["answers"][(label, kind)] = answers
        finally:
            index.close()
    index = EdgeIndex(folder, "bench", search_threads=1, tuning=tuning)
    try:
        filters = kinds["own subCategory"]
        per_thread: list[list[float]] = [[] for _ in range(concurrency)]
        barrier = threading.Barrier(concurrency)

        def worker(k: int) -> None:
            barrier.wait()
            for i in range(k, len(queries), concurrency):
                started = time.perf_counter()
                index.search(queries[i], TOP_K, {"subCategory": filters[i]})
                per_thread[k].append(time.perf_counter() - started)

        started = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results["concurrent"] = ([x for xs in per_thread for x in xs], time.perf_counter() - started)
        results["rss_mib"] = _rss_mib()[0]  # while the collection is open: closing unmaps its files
    finally:
        index.close()
    return results


def in_child(fn: Any, *args: Any) -> Any:
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def disk_mib(folder: Path) -> float:
    """Disk space in use (allocated blocks: Qdrant preallocates sparse files of 32 MiB)."""
    return tree_data_bytes(folder) / 2**20


# --------------------------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def recall(answers: list[list[int]], exact: list[list[int]]) -> float:
    return float(np.mean([len(set(a) & set(e)) / max(1, len(e)) for a, e in zip(answers, exact, strict=True)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="40000,200000")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--ef", default="64,128,256", help="hnsw_ef values to measure (the default setting: 128)")
    parser.add_argument(
        "--far-ef", default=str(EdgeTuning.far_filter_ef), help="far_filter_ef values, with the copies, at each ef"
    )
    parser.add_argument("--quantization", default="off,on", help="off, on or both (scalar int8)")
    parser.add_argument("--concurrency", type=int, default=min(32, (os.cpu_count() or 1) + 4))
    parser.add_argument("--index-from", type=int, default=None, help="EdgeTuning.index_from_points (default: its own)")
    parser.add_argument("--full-scan", type=int, default=None, help="EdgeTuning.full_scan_points (default: its own)")
    parser.add_argument("--exposed", type=int, default=None, help="EdgeTuning.exposed_neighbours (default: its own)")
    parser.add_argument("--m", type=int, default=None, help="EdgeTuning.hnsw_m (default: its own)")
    parser.add_argument("--ef-construct", type=int, default=None, help="EdgeTuning.hnsw_ef_construct (default: own)")
    parser.add_argument("--payload-m", type=int, default=None, help="EdgeTuning.hnsw_payload_m (default: its own)")
    parser.add_argument(
        "--segment-points", type=int, default=None, help="EdgeTuning.segment_points (default: its own; 0: one graph)"
    )
    parser.add_argument("--dir", default=None, help="where to build (default: the system's temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the built collections")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synthetic", action="store_true", help="synthetic vectors only (no embedding run)")
    parser.add_argument("--no-acorn", action="store_true", help="also the largest ef without ACORN")
    args = parser.parse_args()

    efs = [int(e) for e in args.ef.split(",") if e]
    acorn = EdgeTuning.acorn_max_selectivity
    far_efs = [int(e) for e in args.far_ef.split(",") if e]
    settings: list[tuple[str, bool, int, float, bool, int]] = [("exact", True, 0, acorn, False, 0)]
    for ef in efs:
        settings += [(f"graph ef {ef}", False, ef, acorn, False, 0), (f"ef {ef} + exposed", False, ef, acorn, True, 0)]
        settings += [(f"ef {ef} + exp, far {f}", False, ef, acorn, True, f) for f in far_efs if f > ef]
    settings += [(f"ef {ef} no ACORN", False, ef, 0.0, False, 0) for ef in efs[-1:] if args.no_acorn]
    rows: list[str] = []
    builds: list[str] = []
    source = ""
    for n in (int(s) for s in args.sizes.split(",")):
        started = time.perf_counter()
        vectors, cats, source = make_catalogue(n, args.dim, args.seed, not args.synthetic)
        rng = np.random.default_rng(args.seed + 1)
        picks = rng.integers(0, n, size=args.queries)
        sample = vectors[rng.integers(0, n, size=(2, 500))]
        spread = float(np.median(np.linalg.norm(sample[0] - sample[1], axis=1)))  # a typical distance
        noise = rng.normal(scale=0.03 * spread / np.sqrt(args.dim), size=(args.queries, args.dim))
        queries = (vectors[picks] + noise).astype(np.float32)
        counts = collections.Counter(cats[rng.integers(0, n, size=20_000)].tolist())
        names = sorted(counts)
        weights = np.asarray([counts[c] for c in names], np.float64)
        drawn = [str(c) for c in rng.choice(names, size=args.queries, p=weights / weights.sum())]
        # The gateway filters by the photo's predicted subCategory, mostly the query's own; another one drawn from
        # the distribution sends the search to far-away points, the hard case for a graph ("far": never the
        # query's own, so every search of the set is one).
        own = [str(c) for c in cats[picks]]
        far = [str(rng.choice(names, p=far_weights(names, weights, o))) for o in own]
        kinds: dict[str, list[str | None]] = {
            "unfiltered": [None] * args.queries,
            "own subCategory": list[str | None](own),
            "any subCategory": list[str | None](drawn),
            "far subCategory": list[str | None](far),
            f"rare ({RARE_COUNT} points)": [RARE] * args.queries,
        }
        reference = {kind: exact_answers(vectors, cats, queries, f) for kind, f in kinds.items()}
        print(f"  {n}: points and exact answers in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        work = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
        try:
            data = work / "data"
            data.mkdir()
            np.save(data / "vectors.npy", vectors)
            np.save(data / "cats.npy", cats)
            np.save(data / "queries.npy", queries)
            np.save(data / "query_kinds.npy", np.asarray(kinds, dtype=object), allow_pickle=True)
            del vectors
            stored = np.load(data / "vectors.npy", mmap_mode="r")  # for the distance ratios, read where needed
            for quantization in args.quantization.split(","):
                tuning = EdgeTuning(scalar_quantization=quantization == "on")
                if args.index_from:
                    tuning = replace(tuning, index_from_points=args.index_from)
                if args.full_scan:
                    tuning = replace(tuning, full_scan_points=args.full_scan)
                if args.exposed is not None:
                    tuning = replace(tuning, exposed_neighbours=args.exposed)
                if args.m:
                    tuning = replace(tuning, hnsw_m=args.m)
                if args.payload_m is not None:
                    tuning = replace(tuning, hnsw_payload_m=args.payload_m)
                if args.segment_points is not None:
                    tuning = replace(tuning, segment_points=args.segment_points)
                if args.ef_construct:
                    tuning = replace(tuning, hnsw_ef_construct=args.ef_construct)
                folder = work / f"edge-{quantization}"
                built = in_child(build_child, str(folder), str(data), tuning)
                size = disk_mib(folder / "bench")
                print(f"  {n} sq {quantization}: built {built}", file=sys.stderr, flush=True)
                res = in_child(search_child, str(folder), str(data), tuning, settings, args.concurrency)
                builds.append(
                    f"| {n:>9,} | {quantization:>3} | {built['load_s']:7.0f} | {built['optimize_s']:8.0f} |"
                    f" {built['flag_s']:6.1f} | {built['exposed']:6.1%} | {built['cpu_s']:7.0f} |"
                    f" {built['graph_points']:>9,} | {built['graph_peak_rss_mib']:14.0f} |"
                    f" {built['peak_rss_mib']:8.0f} |"
                    f" {res['rss_mib']:8.0f} | {size:8.0f} |"
                )
                for label, *_ in settings:
                    for kind in kinds:
                        lat = res["latency"][(label, kind)]
                        rows.append(
                            f"| {n:>9,} | {quantization:>3} | {label:<22} | {kind:<16} | {pct(lat, 50):7.2f} |"
                            f" {pct(lat, 95):7.2f} | {pct(lat, 99):7.2f} | {1 / np.mean(lat):7.0f} |"
                            f" {recall(res['answers'][(label, kind)], reference[kind]):6.3f} |"
                            f" {distance_ratio(stored, queries, res['answers'][(label, kind)], reference[kind]):6.4f} |"
                        )
                lat, wall = res["concurrent"]
                rows.append(
                    f"| {n:>9,} | {quantization:>3} | ef {tuning.hnsw_ef} x{args.concurrency:<13} | own subCategory "
                    f" | {pct(lat, 50):7.2f} | {pct(lat, 95):7.2f} | {pct(lat, 99):7.2f} |"
                    f" {len(lat) / wall:7.0f} |    --- |    --- |"
                )
                print("\n".join([builds[-1], *rows[-len(settings) * len(kinds) - 1 :]]), file=sys.stderr, flush=True)
        finally:
            if args.keep:
                print(f"  kept {work}", file=sys.stderr)
            else:
                shutil.rmtree(work, ignore_errors=True)

    print(f"\nQdrant Edge through EdgeIndex, dim {args.dim}, top-{TOP_K}, {source}; {args.queries} queries per set")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("\nBuild (load = upserts in batches of 1000; optimize = graph and segment merge; peak RSS of the build")
    print("process after the graph and after the flagging; RSS of the search process after its queries, the")
    print("collection still open; disk = the collection folder)\n")
    print(
        "| points    | sq  | load s  | optimize s | flag s | exposed | cpu s | graph pts | graph peak MiB | peak MiB |"
        " serve MiB | disk MiB |"
    )
    print(
        "|-----------|-----|---------|------------|--------|---------|-------|-----------|----------------|----------|"
        "-----------|----------|"
    )
    print("\n".join(builds))
    print(
        f"\nSearch (one thread, then filtered at concurrency {args.concurrency}: per-search latency,"
        " total searches/s)\n"
    )
    print("(dist@5: the 5th answer's distance over the exact 5th's, mean; 1.0000 where nothing was missed)\n")
    print(
        "| points    | sq  | setting                | filter           | p50 ms  | p95 ms  | p99 ms  | q/s     |"
        " recall@5 | dist@5 |"
    )
    print(
        "|-----------|-----|------------------------|------------------|---------|---------|---------|---------|----------|"
        "--------|"
    )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
