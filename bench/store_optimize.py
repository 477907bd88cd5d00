"""Why the gateway never optimises its live Qdrant Edge collection, and what its own writes cost until a rebuild.

1. A Python thread counts while ``EdgeShard.optimize()`` runs in another thread: how much of the interpreter the
   graph build leaves to the rest of the process (the GIL).
2. Searches on a served collection while a graph is built (a) in this process, on another collection, and (b) in a
   separate process (the indexer's rebuild, a restore): searches done and the longest one.
3. Searches on an optimised collection after the gateway's own upserts (which land in an unindexed segment that
   every search scans): p50 / p99 by how many points were written since the last build.

    python bench/store_optimize.py [--points 100000] [--written 0,10000,50000,100000] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from fashionsearch.store import EmbedderIdentity, StoredPoint  # noqa: E402
from fashionsearch.store.edge import EdgeCatalog, EdgeIndex  # noqa: E402

DIM = 32
EMBEDDER = EmbedderIdentity("bench", "1")
CENTRES = np.random.default_rng(0).normal(size=(300, DIM)).astype(np.float32)


def points(start: int, n: int, rng: np.random.Generator) -> list[StoredPoint]:
    vectors = CENTRES[rng.integers(0, 300, n)] + 0.3 * rng.normal(size=(n, DIM)).astype(np.float32)
    return [
        StoredPoint(id=start + k, vector=vectors[k], payload={"subCategory": f"Category{(start + k) % 45}"})
        for k in range(n)
    ]


def load(index: EdgeIndex, n: int, rng: np.random.Generator, start: int = 1) -> None:
    index.ensure_collection(DIM, EMBEDDER)
    for s in range(0, n, 1000):
        index.upsert(points(start + s, min(1000, n - s), rng))


def searches_while(index: EdgeIndex, running: threading.Event | subprocess.Popen[str]) -> tuple[int, float]:
    """Searches (filtered top-5) done while the other work runs, and the longest one in ms."""
    rng = np.random.default_rng(5)
    done, longest = 0, 0.0
    alive = running.is_set if isinstance(running, threading.Event) else (lambda: running.poll() is None)
    while alive():
        started = time.perf_counter()
        index.search(rng.normal(size=DIM).astype(np.float32), 5, {"subCategory": "Category3"})
        longest = max(longest, time.perf_counter() - started)
        done += 1
    return done, longest * 1000


_CHILD = """
import sys
from fashionsearch.store.edge import EdgeCatalog
index = EdgeCatalog(sys.argv[1]).open("green")
print("optimising", flush=True)
index.optimize()
index.close()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--written", default="0,10000,50000,100000")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    work = Path(tempfile.mkdtemp(prefix="bench-optimize-", dir=args.dir))
    lines: list[str] = []
    try:
        catalog = EdgeCatalog(work)
        blue = catalog.open("blue")
        load(blue, args.points, rng)
        blue.optimize()

        # 1. The GIL: a pure-Python counter, alone and beside optimize().
        def count(flag: threading.Event, out: list[int]) -> None:
            k = 0
            while flag.is_set():
                k += 1
            out.append(k)

        alone: list[int] = []
        flag = threading.Event()
        flag.set()
        counter = threading.Thread(target=count, args=(flag, alone))
        counter.start()
        time.sleep(2.0)  # a bench: the counter's rate over two seconds
        flag.clear()
        counter.join()
        green = catalog.open("green")
        load(green, args.points, rng)
        beside: list[int] = []
        flag.set()
        counter = threading.Thread(target=count, args=(flag, beside))
        counter.start()
        started = time.perf_counter()
        green.optimize()
        took = time.perf_counter() - started
        flag.clear()
        counter.join()
        lines.append(
            f"Python counter: {alone[0] / 2.0:,.0f}/s alone, {beside[0] / took:,.0f}/s while optimize() ran"
            f" ({took:.0f} s for {args.points:,} points)"
        )
        green.close()
        catalog.drop("green")

        # 2. Searches on the served collection while a graph is built in this process, then in another one.
        green = catalog.open("green")
        load(green, args.points, rng)
        running = threading.Event()
        running.set()
        result: list[tuple[int, float]] = []
        searcher = threading.Thread(target=lambda: result.append(searches_while(blue, running)))
        searcher.start()
        started = time.perf_counter()
        green.optimize()
        took = time.perf_counter() - started
        running.clear()
        searcher.join()
        lines.append(
            f"optimize() in this process ({took:.0f} s): {result[0][0]} searches on the served collection,"
            f" longest {result[0][1]:.0f} ms"
        )
        green.close()
        catalog.drop("green")
        green = catalog.open("green")
        load(green, args.points, rng)
        green.close()
        started = time.perf_counter()
        with subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(work)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
        ) as child:
            assert child.stdout is not None
            child.stdout.readline()
            done, longest = searches_while(blue, child)
        took = time.perf_counter() - started
        lines.append(
            f"optimize() in another process ({took:.0f} s): {done} searches on the served collection,"
            f" longest {longest:.0f} ms"
        )

        # 3. The gateway's own writes after the build.
        lines.append("\n| written since the build | filtered p50 ms | p99 ms | unfiltered p50 ms | p99 ms |")
        lines.append("|---|---|---|---|---|")
        written = 0
        queries = [points(0, 1, np.random.default_rng(i))[0].vector for i in range(300)]
        for target in (int(w) for w in args.written.split(",")):
            if target > written:
                load(blue, target - written, rng, start=10_000_000 + written)
                written = target
            row = []
            for filters in ({"subCategory": "Category3"}, None):
                lat = []
                for q in queries:
                    started = time.perf_counter()
                    blue.search(q, 5, filters)
                    lat.append(time.perf_counter() - started)
                row += [np.percentile(lat, 50) * 1000, np.percentile(lat, 99) * 1000]
            lines.append(f"| {written:,} | {row[0]:.2f} | {row[1]:.2f} | {row[2]:.2f} | {row[3]:.2f} |")
        blue.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nQdrant Edge optimise, {args.points:,} points of dim {DIM}; {platform.machine()}, {os.cpu_count()} cores\n"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
