"""One writer per Qdrant Edge directory and collection: the locks of fashionsearch.store.lock, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fashionsearch.store import EmbedderIdentity, StoredPoint, open_catalog
from fashionsearch.store.edge import DROP_MARKER, EdgeCatalog, EdgeIndex, FollowingEdgeIndex
from fashionsearch.store.lock import StoreLockedError
from testkit.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
V1 = EmbedderIdentity("emb", "1")
V2 = EmbedderIdentity("emb", "2")

# Opens the gateway's reader on an Edge directory, says so, and waits to be killed.
HOLDER = """
import sys, time
from fashionsearch.store import open_catalog
index = open_catalog(data_dir=sys.argv[1]).live("catalogue")
print("open", flush=True)
time.sleep(60)
"""


def _hold(data_dir: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
    return holder


def _fill(index, identity: EmbedderIdentity, ids: range) -> None:
    index.ensure_collection(2, identity)
    index.upsert([StoredPoint(i, np.array([float(i), 0.0], dtype=np.float32)) for i in ids])


def test_a_second_process_on_an_empty_directory_is_refused_before_it_creates_anything(tmp_path: Path) -> None:
    holder = _hold(tmp_path)
    try:
        with pytest.raises(StoreLockedError) as refused:
            open_catalog(data_dir=tmp_path).live("catalogue")
        message = str(refused.value)
        assert str(tmp_path) in message and f"pid {holder.pid}" in message, message
        # Nor can anyone write the collection the holder serves, even though it holds no shard yet.
        with pytest.raises(StoreLockedError, match=f"{tmp_path / 'catalogue'}.*pid {holder.pid}"):
            EdgeIndex(tmp_path, "catalogue")
        assert not (tmp_path / "catalogue" / "shard").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=10)
    # A holder that died leaves no stale lock: the kernel dropped it with the process.
    reopened = open_catalog(data_dir=tmp_path).live("catalogue")
    _fill(reopened, V1, range(1, 4))
    assert reopened.count() == 3
    reopened.close()


def test_locks_are_released_on_close_and_refused_to_a_second_handle(tmp_path: Path) -> None:
    first = EdgeIndex(tmp_path, "catalogue")
    with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):
        EdgeIndex(tmp_path, "catalogue")
    first.close()
    EdgeIndex(tmp_path, "catalogue").close()
    reader = EdgeCatalog(tmp_path).live("catalogue")
    with pytest.raises(StoreLockedError, match="data directory"):
        EdgeCatalog(tmp_path).live("catalogue")
    reader.close()
    EdgeCatalog(tmp_path).live("catalogue").close()


def test_a_collection_held_elsewhere_is_dropped_by_its_holder_when_it_lets_go(tmp_path: Path) -> None:
    catalog = EdgeCatalog(tmp_path)
    old = catalog.open("catalogue")
    _fill(old, V1, range(1, 4))
    catalog.release(old)
    reader = FollowingEdgeIndex(EdgeCatalog(tmp_path), "catalogue", retire_after_s=0.2)
    assert reader.count() == 3

    new = catalog.open("catalogue--v2")
    _fill(new, V2, range(1, 6))
    catalog.release(new)
    catalog.switch("catalogue", "catalogue--v2")
    assert catalog.drop("catalogue") is False  # the reader has it open: marked, not deleted
    assert (tmp_path / "catalogue" / DROP_MARKER).exists()
    assert reader.count() == 5  # moved over; the old collection is retired, still open for calls in flight
    assert (tmp_path / "catalogue").is_dir()
    # Once retire_after_s has passed, the next call closes the old collection and its holder drops it.
    wait_until(lambda: reader.count() == 5 and not (tmp_path / "catalogue").exists(), "the old collection dropped")
    reader.close()
    assert catalog.drop("catalogue--unknown") is True and not (tmp_path / "catalogue--unknown.lock").exists()


def test_a_drop_left_by_a_holder_that_died_is_done_at_the_next_start(tmp_path: Path) -> None:
    catalog = EdgeCatalog(tmp_path)
    for name, identity in (("catalogue", V1), ("catalogue--v2", V2)):
        index = catalog.open(name)
        _fill(index, identity, range(1, 3))
        catalog.release(index)
    catalog.switch("catalogue", "catalogue--v2")
    (tmp_path / "catalogue" / DROP_MARKER).touch()  # as if the holder died before it could drop it
    reader = open_catalog(data_dir=tmp_path).live("catalogue")
    assert not (tmp_path / "catalogue").exists() and reader.count() == 2
    reader.close()
