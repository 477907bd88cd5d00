"""Compaction of the live Edge collection: the graph is rebuilt in a child process while this process keeps
searching and writing through the write journal, and afterwards the collection holds exactly what was written."""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path

import numpy as np
import pytest

from fashionsearch.store import EmbedderIdentity, StoredPoint, edge_compaction
from fashionsearch.store.backup import WriteJournal
from fashionsearch.store.edge import EdgeCatalog
from fashionsearch.store.edge_compaction import compact
from fashionsearch.store.edge_tuning import EdgeTuning

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DIM = 8
EMBEDDER = EmbedderIdentity("embedder", "8")
WRITES = 2000


def _point(pid: int, rng: np.random.Generator, tag: str = "") -> StoredPoint:
    return StoredPoint(
        id=pid,
        vector=rng.normal(size=DIM).astype(np.float32),
        payload={"subCategory": "Topwear", "name": f"{pid}{tag}"},
    )


def _small_live_catalogue(
    tmp_path: Path, rng: np.random.Generator
) -> tuple[EdgeCatalog, WriteJournal, list[StoredPoint]]:
    """100 points in catalogue--embedder-8 behind the alias "catalogue", served through a write journal."""
    catalog = EdgeCatalog(tmp_path / "edge", tuning=EdgeTuning(index_from_points=50, full_scan_points=10))
    first = catalog.open("catalogue--embedder-8")
    first.ensure_collection(DIM, EMBEDDER)
    points = [_point(i, rng) for i in range(1, 101)]
    first.upsert(points)
    catalog.release(first)
    catalog.switch("catalogue", "catalogue--embedder-8")
    live = WriteJournal(catalog.live("catalogue"))
    return catalog, live, points


def test_compaction_keeps_every_write_made_while_it_runs(tmp_path):
    rng = np.random.default_rng(0)
    catalog = EdgeCatalog(tmp_path / "edge", tuning=EdgeTuning(index_from_points=500, full_scan_points=50))
    first = catalog.open("catalogue--embedder-8")
    first.ensure_collection(DIM, EMBEDDER)
    expected = {p.id: p for p in (_point(i, rng) for i in range(1, 3001))}
    first.upsert(list(expected.values()))
    catalog.release(first)
    catalog.switch("catalogue", "catalogue--embedder-8")
    live = WriteJournal(catalog.live("catalogue"))
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(compact(catalog, "catalogue", live, tmp_path / "work"))
        except BaseException as failed:  # noqa: BLE001 - shown by the assertion below
            outcome.append(failed)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        k = 0
        # Writes and reads all along the compaction (at most WRITES of them, so a slow machine does not grow the
        # unindexed segment without bound), and a few after it. Each write is read back by id: a nearest-neighbour
        # search over a graph is approximate, and a miss there would say nothing about a lost write.
        while (worker.is_alive() and k < WRITES) or k < 20:
            k += 1
            point = _point(5000 + k, rng, " new") if k % 3 else _point(int(rng.integers(1, 3001)), rng, " v2")
            live.upsert([point])
            expected[point.id] = point
            if k % 7 == 0:
                gone = int(rng.integers(1, 3001))
                live.delete([gone])
                expected.pop(gone, None)
            (stored,) = live.retrieve([point.id])
            assert np.array_equal(stored.vector, point.vector) and dict(stored.payload) == point.payload
            assert live.search(point.vector, 5)  # searches go on while the graph is rebuilt
    finally:
        worker.join()
    (result,) = outcome
    assert not isinstance(result, BaseException), result
    ids = [i for i, _ in live.scroll((), 1000)]  # the live index moves over to the new collection on a call
    assert live.collection == result.collection != "catalogue--embedder-8"
    stored = {p.id: p for p in live.retrieve(ids)}
    assert sorted(stored) == sorted(expected)
    for pid, point in expected.items():
        assert np.array_equal(stored[pid].vector, point.vector) and dict(stored[pid].payload) == point.payload
    live.close()
    assert not (tmp_path / "edge" / "catalogue--embedder-8").exists()  # dropped once the gateway let go


def test_compacting_twice_in_a_row_names_a_new_collection_each_time(tmp_path):
    rng = np.random.default_rng(1)
    catalog, live, points = _small_live_catalogue(tmp_path, rng)
    once = compact(catalog, "catalogue", live, tmp_path / "work")
    twice = compact(catalog, "catalogue", live, tmp_path / "work")
    assert len({"catalogue--embedder-8", once.collection, twice.collection}) == 3
    assert catalog.resolve("catalogue") == twice.collection
    assert sorted(p.id for p in live.retrieve([p.id for p in points])) == [p.id for p in points]
    live.close()


class _InThisProcess(concurrent.futures.ThreadPoolExecutor):
    """The child process's pool, as a thread: the build below runs here, where the test can make it fail."""

    def __init__(self, workers: int, mp_context: object = None) -> None:
        super().__init__(workers)


def test_a_build_that_fails_half_way_leaves_no_collection_and_no_work_folder(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    catalog, live, points = _small_live_catalogue(tmp_path, rng)

    def half_built(data_dir: str, collection: str, backup: str, tuning: EdgeTuning | None) -> int:
        index = EdgeCatalog(data_dir, tuning=tuning).open(collection)
        index.ensure_collection(DIM, EMBEDDER)
        index.upsert(points[:10])
        index.close()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _InThisProcess)
    monkeypatch.setattr(edge_compaction, "build_from_backup", half_built)
    with pytest.raises(OSError, match="No space left"):
        compact(catalog, "catalogue", live, tmp_path / "work")
    assert catalog.resolve("catalogue") == "catalogue--embedder-8"
    assert sorted(path.name for path in (tmp_path / "edge").iterdir() if path.is_dir()) == ["catalogue--embedder-8"]
    assert not (tmp_path / "work").exists()
    live.upsert([_point(500, rng)])  # the live collection serves on
    assert sorted(p.id for p in live.retrieve([1, 500])) == [1, 500]
    live.close()
