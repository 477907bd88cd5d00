"""Backup and restore of a large catalogue while it serves: the gateway's path, measured without the model services.

Builds an Edge collection of N points (clustered synthetic vectors of dim 32, catalogue-like payloads), then, in
this process as the gateway does, serves it through a WriteJournal while one thread searches (filtered top-5) and
one writes (an upsert, and every tenth a delete) without pause, and:

1. writes a backup (fashionsearch.store.backup.write_backup, what POST /v1/admin/backup runs);
2. restores it with ``python -m jobs.backup restore latest --edge-dir --no-switch`` in a separate process (what an
   operator runs beside the gateway): a new collection from the backup's shard files (``--from-points``: from its
   points, with a graph build), while the traffic goes on; then the traffic stops and the alias is switched (a file
   rename; the switch itself is tested in tests/integration);
3. checks that the restored collection holds every id, vector and payload of the backup.

Prints the times, the searches and writes done and failed during each phase, and their latency.

    python bench/store_backup.py [--points 200000] [--dir /var/tmp] [--keep] [--from-points]
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
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from fashionsearch.store import EmbedderIdentity, StoredPoint, open_catalog  # noqa: E402
from fashionsearch.store.backup import WriteJournal, list_backups, read_backup, write_backup  # noqa: E402

DIM = 32
EMBEDDER = EmbedderIdentity("embedder", "8")
CATEGORIES = [f"Category{i}" for i in range(45)]
WEIGHTS = np.asarray([1 / (i + 1) for i in range(45)]) / sum(1 / (i + 1) for i in range(45))


def payload(i: int, category: str) -> dict[str, Any]:
    return {
        "name": f"Brand{i % 500} Men Navy Blue Shirt {i}",
        "gender": "Men",
        "masterCategory": "Apparel",
        "subCategory": category,
        "articleType": "Shirts",
        "baseColour": "Navy Blue",
        "season": "Fall",
        "year": 2011 + i % 8,
        "usage": "Casual",
        "image_ref": f"images/{i}.jpg",
        "content_hash": f"{i:064x}",
    }


def build(data_dir: Path, n: int, rng: np.random.Generator) -> float:
    catalog = open_catalog(data_dir=data_dir)
    index = catalog.open("catalogue--embedder-8")
    started = time.perf_counter()
    index.ensure_collection(DIM, EMBEDDER)
    centres = rng.normal(size=(300, DIM)).astype(np.float32)
    for start in range(0, n, 1000):
        count = min(1000, n - start)
        vectors = centres[rng.integers(0, 300, count)] + 0.3 * rng.normal(size=(count, DIM)).astype(np.float32)
        cats = rng.choice(45, size=count, p=WEIGHTS)
        index.upsert(
            [
                StoredPoint(id=start + k + 1, vector=vectors[k], payload=payload(start + k + 1, CATEGORIES[cats[k]]))
                for k in range(count)
            ]
        )
    index.optimize()
    catalog.release(index)
    catalog.switch("catalogue", "catalogue--embedder-8")
    return time.perf_counter() - started


class Traffic:
    """One thread searching and one writing through the serving index, counting what went through and failed."""

    def __init__(self, index: Any, n: int) -> None:
        self.index = index
        self.n = n
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.search_s: list[float] = []
        self.write_s: list[float] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._search), threading.Thread(target=self._write)]

    def _search(self) -> None:
        rng = np.random.default_rng(1)
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                self.index.search(rng.normal(size=DIM).astype(np.float32), 5, {"subCategory": "Category3"})
                with self.lock:
                    self.search_s.append(time.perf_counter() - started)
            except Exception as failed:  # noqa: BLE001 - counted and shown
                with self.lock:
                    self.failures.append(f"search: {failed}")

    def _write(self) -> None:
        rng = np.random.default_rng(2)
        k = 0
        while not self.stop.is_set():
            k += 1
            started = time.perf_counter()
            try:
                if k % 10 == 0:
                    self.index.delete([int(rng.integers(1, self.n))])
                else:
                    pid = self.n + k if k % 2 else int(rng.integers(1, self.n))
                    vector = rng.normal(size=DIM).astype(np.float32)
                    self.index.upsert([StoredPoint(id=pid, vector=vector, payload=payload(pid, "Category7"))])
                with self.lock:
                    self.write_s.append(time.perf_counter() - started)
            except Exception as failed:  # noqa: BLE001 - counted and shown
                with self.lock:
                    self.failures.append(f"write: {failed}")

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def take(self) -> tuple[list[float], list[float], list[str]]:
        with self.lock:
            taken = (self.search_s, self.write_s, self.failures)
            self.search_s, self.write_s, self.failures = [], [], []
        return taken


def verify(catalog: Any, backup_dir: Path) -> int:
    """Every id, vector and payload of the backup (its last state) in the restored collection; returns the count."""
    (made,) = list_backups(backup_dir)
    chunks = list(read_backup(made))
    patched = {p.id for p in chunks[-1][0]} | set(chunks[-1][1]) if len(chunks) > 1 else set()
    restored = catalog.open(catalog.resolve("catalogue"))
    checked = 0
    try:
        for number, (points, deleted) in enumerate(chunks):
            last = number == len(chunks) - 1
            wanted = [p for p in points if last or p.id not in patched]
            got = {p.id: p for p in restored.retrieve([p.id for p in wanted])}
            for p in wanted:
                mine = got.get(p.id)
                if mine is None or not np.array_equal(mine.vector, p.vector) or dict(mine.payload) != dict(p.payload):
                    raise SystemExit(f"restored point {p.id} differs from the backup")
            if restored.retrieve(deleted):
                raise SystemExit("a point deleted during the backup is in the restored collection")
            checked += len(wanted)
        if restored.count() != made.points:
            raise SystemExit(f"restored {restored.count()} points, the backup holds {made.points}")
    finally:
        catalog.release(restored)
    return checked


def ms(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:.1f}" if values else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--baseline-s", type=float, default=20.0, help="traffic before the backup, for comparison")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--from-points", action="store_true", help="restore from the points (a graph build)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-backup-", dir=args.dir))
    data_dir, backup_dir = work / "edge", work / "backups"
    rows: list[str] = []
    try:
        build_s = build(data_dir, args.points, np.random.default_rng(0))
        print(f"  built {args.points} in {build_s:.0f} s", file=sys.stderr, flush=True)
        catalog = open_catalog(data_dir=data_dir)
        live = WriteJournal(catalog.live("catalogue"))
        with Traffic(live, args.points) as traffic:
            time.sleep(args.baseline_s)  # a bench: traffic for a while, to compare with
            phases: list[tuple[str, float, tuple[list[float], list[float], list[str]]]] = []
            phases.append(("serving (before)", args.baseline_s, traffic.take()))
            started = time.perf_counter()
            made = write_backup(live, backup_dir, "bench", source="bench", journal=live)
            phases.append(("backup", time.perf_counter() - started, traffic.take()))
            started = time.perf_counter()
            restore = subprocess.run(
                [sys.executable, "-m", "jobs.backup", "restore", "latest", "--backups", str(backup_dir)]
                + ["--edge-dir", str(data_dir), "--no-switch", "--log-level", "WARNING"]
                + (["--from-points"] if args.from_points else []),
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=False,
            )
            restore_s = time.perf_counter() - started
            if restore.returncode != 0:
                raise SystemExit(f"restore failed: {restore.stderr}")
            phases.append(("restore (other process)", restore_s, traffic.take()))
        live.close()
        moved_to = restore.stdout.split(" into ")[1].split()[0]
        catalog.switch("catalogue", moved_to)
        checked = verify(catalog, backup_dir)
        size = made.size_bytes / 2**20
        for label, seconds, (searches, writes, failures) in phases:
            rows.append(
                f"| {label:<23} | {seconds:7.1f} | {len(searches):>8} | {ms(searches, 50):>6} | {ms(searches, 99):>6} |"
                f" {len(writes):>6} | {ms(writes, 50):>6} | {ms(writes, 99):>6} | {ms(writes, 100):>6} |"
                f" {len(failures):>6} |"
            )
            for failure in failures[:3]:
                rows.append(f"|   {failure}")
    finally:
        if args.keep:
            print(f"  kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nBackup and restore of {args.points:,} points (dim {DIM}, catalogue-like payloads) while serving")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    shard = "its shard files" if made.shard_files and not args.from_points else "its points (and a graph build)"
    print(f"build (load + optimize) {build_s:.0f} s; backup {made.points:,} points, {size:.0f} MiB on disk;")
    print(f"restored from {shard}")
    print(f"restored into {moved_to}; every id, vector and payload checked: {checked:,} points\n")
    print(
        "| phase                   | seconds | searches | p50 ms | p99 ms | writes | p50 ms | p99 ms | max ms |"
        " failed |"
    )
    print(
        "|-------------------------|---------|----------|--------|--------|--------|--------|--------|--------|"
        "--------|"
    )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
