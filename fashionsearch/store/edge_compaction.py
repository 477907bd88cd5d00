"""Compaction of the gateway's live Qdrant Edge collection: its own writes folded into a freshly built graph, in the
background, without holding up its searches or writes.

The gateway's upserts land in an unindexed segment that every search scans exactly (bench/store_optimize.py
measures the cost by how many were written). Qdrant Edge's ``optimize()`` would fold them into the graph, but it
holds the GIL for the whole build (seconds to minutes), so the gateway may not call it on anything. Compaction
builds the graph in a separate process instead, blue/green:

1. a backup of the live collection through the write journal (pages, searches and writes go on between them),
   which keeps recording the ids written after it;
2. a child process restores the backup into a new collection and builds its graph (``optimize()`` there);
3. the writes recorded since the backup are replayed into the new collection, first without holding writes, then
   the last few behind the journal's barrier, which also covers the alias switch; the gateway's index moves over on
   its next call and drops the old collection when it lets go of it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import multiprocessing
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fashionsearch.errors import StoreError
from fashionsearch.store.backup import WriteJournal, backup_name, read_manifest, restore_into, write_backup
from fashionsearch.store.base import VectorIndex, check_name
from fashionsearch.store.edge import EdgeCatalog
from fashionsearch.store.edge_tuning import EdgeTuning

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Compaction:
    """What a compaction did."""

    previous: str
    collection: str
    points: int
    replayed: int
    seconds: float


def build_from_backup(data_dir: str, collection: str, backup: str, tuning: EdgeTuning | None) -> int:
    """In a child process: a new collection from the backup, with its graph; the number of points it holds."""
    index = EdgeCatalog(data_dir, tuning=tuning).open(collection)
    try:
        return restore_into(index, read_manifest(backup))
    finally:
        index.close()


def _replay(ids: set[int], source: VectorIndex, target: VectorIndex) -> None:
    """The current state of ids in source, written into target (present: upserted, absent: deleted)."""
    wanted = sorted(ids)
    for start in range(0, len(wanted), 1000):
        page = wanted[start : start + 1000]
        present = source.retrieve(page)
        if present:
            target.upsert(present)
        gone = set(page) - {p.id for p in present}
        if gone:
            target.delete(sorted(gone))


def _remove_if_empty(folder: Path) -> None:
    """The compaction's work folder, once its backup is gone (another compaction may be using it: then it stays)."""
    with contextlib.suppress(OSError):
        folder.rmdir()


def compact(catalog: EdgeCatalog, alias: str, journal: WriteJournal, work_dir: Path) -> Compaction:
    """Rebuild the alias's live collection with a graph over all its points, in a child process, and switch to it;
    the journal wraps the index the gateway serves from (its writes wait only for the last replay and the switch)."""
    started = time.perf_counter()
    previous = catalog.resolve(alias)
    if previous is None:
        raise StoreError(f"no collection behind {alias} to compact")
    # to the microsecond: a compaction started within the second the previous one switched would name its target
    # after the collection it replaces
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    target = check_name(f"{previous.split('--compacted-')[0]}--compacted-{stamp}")
    made = write_backup(
        journal,
        work_dir,
        backup_name(previous),
        source=f"compaction of {previous}",
        journal=journal,
        keep_recording=True,
        shard_copy=False,  # the child builds a fresh graph from the points: that is the compaction
    )
    index: VectorIndex | None = None
    try:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: its GIL is not the gateway's
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            build = pool.submit(build_from_backup, str(catalog.root), target, str(made.path), catalog.tuning)
            points = build.result()
        index = catalog.open(target)
        with journal.barrier():
            first = journal.take()
        _replay(first, journal.index, index)  # most of the writes made during the build, writes going on
        with journal.barrier():  # the rest, then the switch, with writes held
            if catalog.resolve(alias) != previous:
                raise StoreError(f"alias {alias} was switched during the compaction; nothing changed")
            last = journal.take()
            _replay(last, journal.index, index)
            catalog.release(index)
            index = None
            catalog.switch(alias, target)
    except BaseException:
        # Nothing points at the new collection: a build that failed half-way (a full disk, the child killed)
        # or a switch that did not happen leaves no collection behind.
        if index is not None:
            catalog.release(index)
        catalog.drop(target)
        raise
    finally:
        journal.stop()
        shutil.rmtree(made.path, ignore_errors=True)
        _remove_if_empty(work_dir)
    catalog.drop(previous)  # marked: the gateway's index drops it when it has moved over
    seconds = time.perf_counter() - started
    replayed = len(first) + len(last)
    logger.info(
        "compacted %s into %s: %s points, %s writes replayed, %.1f s", previous, target, points, replayed, seconds
    )
    return Compaction(previous, target, points, replayed, seconds)
